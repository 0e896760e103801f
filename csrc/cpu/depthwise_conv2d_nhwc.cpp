#include "depthwise_conv2d_nhwc.h"

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <climits>
#include <vector>

#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

struct NhwcShape {
  int64_t N, C, Cp, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// T: the arithmetic type (of the weights, bias and accumulators); St: how input and output
// are stored (T itself, or uint16_t for bfloat16 bits, widened on load and rounded on store).
template <typename T, typename St = T>
struct NhwcJob {
  NhwcShape S;
  const St* in;
  const T* wt;    // [kh*kw][Cp]: the weight transposed, zero past C
  const T* bias;  // [Cp], zero where there is none
  St* out;
  const T* grad_output;
  T* grad_input;
  T* partial;     // [batch][kh*kw][Cp] grad_weight per image
  T* grad_bias;
};

// Channels rounded up to the widest vector of any ISA, so weight and bias loads are whole.
constexpr int64_t kChannelPad = 16;

NhwcShape make_shape(const Conv2dGeometry& g, const Conv2dParams& p) {
  NhwcShape S;
  S.N = g.batch, S.C = g.in_channels, S.Cp = (g.in_channels + kChannelPad - 1) / kChannelPad * kChannelPad;
  S.H = g.in_h, S.W = g.in_w, S.OH = g.out_h, S.OW = g.out_w;
  S.kh = g.kernel_h, S.kw = g.kernel_w;
  S.sh = p.stride[0], S.sw = p.stride[1], S.ph = p.padding[0], S.pw = p.padding[1];
  S.dh = p.dilation[0], S.dw = p.dilation[1];
  return S;
}

// The weight as [kh*kw][Cp] and the bias as [Cp] in the arithmetic type T (W: as stored).
template <typename T, typename W>
std::vector<T> transposed_weight(const W* w, const NhwcShape& S) {
  const int64_t kk = S.kh * S.kw;
  std::vector<T> wt(static_cast<size_t>(kk * S.Cp), T(0));
  for (int64_t c = 0; c < S.C; ++c)
    for (int64_t t = 0; t < kk; ++t)
      wt[static_cast<size_t>(t * S.Cp + c)] = static_cast<T>(w[c * kk + t]);
  return wt;
}
template <typename T, typename W>
std::vector<T> padded_bias(const W* bias, const NhwcShape& S) {
  std::vector<T> b(static_cast<size_t>(S.Cp), T(0));
  if (bias != nullptr)
    for (int64_t c = 0; c < S.C; ++c) b[static_cast<size_t>(c)] = static_cast<T>(bias[c]);
  return b;
}

}  // namespace

// The same loops compiled for each ISA; active_isa() picks one at run time.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
namespace isa_avx512 {
namespace {
constexpr int kVecBytes = 64;
#include "depthwise_conv2d_nhwc_kernels.inc"
}
}  // namespace isa_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
namespace {
constexpr int kVecBytes = 32;
#include "depthwise_conv2d_nhwc_kernels.inc"
}
}  // namespace isa_avx2
#pragma GCC pop_options

namespace isa_portable {
namespace {
constexpr int kVecBytes = 16;  // SSE2, part of every x86-64
#include "depthwise_conv2d_nhwc_kernels.inc"
}
}  // namespace isa_portable

namespace {

enum class NhwcPass { Forward, GradInput, GradWeight, GradBias };

template <typename T>
void run_pass(const NhwcJob<T>& J, NhwcPass pass, int64_t jobs) {
  using Fn = void (*)(const NhwcJob<T>&, int64_t, int64_t);
  const Isa isa = active_isa();
  Fn fn;
#define CNNEXT_NHWC_PICK(ns)                                   \
  switch (pass) {                                              \
    case NhwcPass::Forward: fn = &ns::nhwc_forward_rows<T>; break;         \
    case NhwcPass::GradInput: fn = &ns::nhwc_grad_input_rows<T>; break;    \
    case NhwcPass::GradWeight: fn = &ns::nhwc_grad_weight_jobs<T>; break;  \
    default: fn = &ns::nhwc_grad_bias_blocks<T>; break;                    \
  }
  if (isa == Isa::Avx512) {
    CNNEXT_NHWC_PICK(isa_avx512)
  } else if (isa == Isa::Avx2) {
    CNNEXT_NHWC_PICK(isa_avx2)
  } else {
    CNNEXT_NHWC_PICK(isa_portable)
  }
#undef CNNEXT_NHWC_PICK
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

// The bfloat16 forward: float32 arithmetic on bfloat16 storage.
void run_bf16_forward(const NhwcJob<float, uint16_t>& J, int64_t jobs) {
  using Fn = void (*)(const NhwcJob<float, uint16_t>&, int64_t, int64_t);
  const Isa isa = active_isa();
  const Fn fn = isa == Isa::Avx512 ? &isa_avx512::nhwc_forward_rows<float, uint16_t>
                : isa == Isa::Avx2 ? &isa_avx2::nhwc_forward_rows<float, uint16_t>
                                   : &isa_portable::nhwc_forward_rows<float, uint16_t>;
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

// Vector lanes of the ISA that will run: the channel block of the per-block passes.
template <typename T>
int64_t lanes() {
  switch (active_isa()) {
    case Isa::Avx512: return 64 / static_cast<int64_t>(sizeof(T));
    case Isa::Avx2: return 32 / static_cast<int64_t>(sizeof(T));
    default: return 16 / static_cast<int64_t>(sizeof(T));
  }
}

}  // namespace

template <typename T>
void depthwise_nhwc_forward(const T* in, const T* w, const T* bias, T* out,
                            const Conv2dGeometry& g, const Conv2dParams& p) {
  NhwcJob<T> J{};
  J.S = make_shape(g, p);
  const std::vector<T> wt = transposed_weight<T>(w, J.S);
  const std::vector<T> b = padded_bias<T>(bias, J.S);
  J.in = in, J.wt = wt.data(), J.bias = b.data(), J.out = out;
  run_pass(J, NhwcPass::Forward, g.batch * g.out_h);
}

template <typename T>
void depthwise_nhwc_backward(const T* grad_output, const T* in, const T* w, T* grad_input,
                             T* grad_weight, T* grad_bias, const Conv2dGeometry& g,
                             const Conv2dParams& p) {
  NhwcJob<T> J{};
  J.S = make_shape(g, p);
  const NhwcShape& S = J.S;
  J.in = in, J.grad_output = grad_output, J.grad_input = grad_input, J.grad_bias = grad_bias;
  const int64_t blocks = (S.C + lanes<T>() - 1) / lanes<T>();
  if (grad_input != nullptr) {
    const std::vector<T> wt = transposed_weight<T>(w, S);
    J.wt = wt.data();
    run_pass(J, NhwcPass::GradInput, S.N * S.H);
  }
  if (grad_weight != nullptr) {
    const int64_t kk = S.kh * S.kw, per_image = kk * S.Cp;
    std::vector<T> partial(static_cast<size_t>(S.N * per_image));
    J.partial = partial.data();
    run_pass(J, NhwcPass::GradWeight, S.N * blocks);
    // Images added in order: the same bits whatever thread computed each partial.
    for (int64_t c = 0; c < S.C; ++c)
      for (int64_t t = 0; t < kk; ++t) {
        T sum = T(0);
        for (int64_t n = 0; n < S.N; ++n) sum += partial[static_cast<size_t>(n * per_image + t * S.Cp + c)];
        grad_weight[c * kk + t] = sum;
      }
  }
  if (grad_bias != nullptr) run_pass(J, NhwcPass::GradBias, blocks);
}

void depthwise_nhwc_forward_bf16(const c10::BFloat16* in, const c10::BFloat16* w,
                                 const c10::BFloat16* bias, c10::BFloat16* out,
                                 const Conv2dGeometry& g, const Conv2dParams& p) {
  NhwcJob<float, uint16_t> J{};
  J.S = make_shape(g, p);
  const std::vector<float> wt = transposed_weight<float>(w, J.S);
  const std::vector<float> b = padded_bias<float>(bias, J.S);
  J.in = reinterpret_cast<const uint16_t*>(in);
  J.out = reinterpret_cast<uint16_t*>(out);
  J.wt = wt.data(), J.bias = b.data();
  run_bf16_forward(J, g.batch * g.out_h);
}

template void depthwise_nhwc_forward<float>(const float*, const float*, const float*, float*,
                                            const Conv2dGeometry&, const Conv2dParams&);
template void depthwise_nhwc_forward<double>(const double*, const double*, const double*,
                                             double*, const Conv2dGeometry&,
                                             const Conv2dParams&);
template void depthwise_nhwc_backward<float>(const float*, const float*, const float*, float*,
                                             float*, float*, const Conv2dGeometry&,
                                             const Conv2dParams&);
template void depthwise_nhwc_backward<double>(const double*, const double*, const double*,
                                              double*, double*, double*, const Conv2dGeometry&,
                                              const Conv2dParams&);

}  // namespace cnnext::cpu
