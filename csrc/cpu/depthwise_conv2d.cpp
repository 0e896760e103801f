#include "depthwise_conv2d.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <vector>

#include "conv2d_workspace.h"
#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

// Geometry of the padded, stride-phase-split copy of one input plane.
struct DwLayout {
  int64_t H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t PH, PW;      // padded extent actually read by some window
  int64_t Q;           // columns per stride phase
  int64_t row_stride;  // sw * Q
};

template <typename T>
struct DwJob {
  DwLayout L;
  DwLayout LT;  // grad_input as a forward pass over grad_output (stride 1 only)
  int64_t in_channels, out_channels, groups, cin_g, cout_g;
  const T* in;
  const T* w;
  const T* bias;
  T* out;
  const T* grad_output;
  T* grad_input;
  T* partial;  // [batch][weight numel]: grad_weight per image, or null
  const T* w_transposed;  // [group][cin_g][cout_g][kh*kw] flipped kernels, or null
  const int64_t* offs;             // [kh*kw] offset of each tap from its output pixel in L
  const int64_t* offs_transposed;  // the same in LT
};

DwLayout make_layout(const Conv2dGeometry& g, const Conv2dParams& p) {
  DwLayout L;
  L.H = g.in_h, L.W = g.in_w, L.OH = g.out_h, L.OW = g.out_w;
  L.kh = g.kernel_h, L.kw = g.kernel_w;
  L.sh = p.stride[0], L.sw = p.stride[1];
  L.ph = p.padding[0], L.pw = p.padding[1];
  L.dh = p.dilation[0], L.dw = p.dilation[1];
  L.PH = (L.OH - 1) * L.sh + (L.kh - 1) * L.dh + 1;
  L.PW = (L.OW - 1) * L.sw + (L.kw - 1) * L.dw + 1;
  L.Q = (L.PW + L.sw - 1) / L.sw;
  L.row_stride = L.sw * L.Q;
  return L;
}

// Layout of grad_output padded so that a stride-1 forward pass with flipped kernels yields
// grad_input: false where that needs negative padding (padding beyond the kernel's extent).
bool make_transposed_layout(const Conv2dGeometry& g, const Conv2dParams& p, DwLayout& LT) {
  if (p.stride[0] != 1 || p.stride[1] != 1) return false;
  const int64_t ph = (g.kernel_h - 1) * p.dilation[0] - p.padding[0];
  const int64_t pw = (g.kernel_w - 1) * p.dilation[1] - p.padding[1];
  if (ph < 0 || pw < 0) return false;
  LT.H = g.out_h, LT.W = g.out_w, LT.OH = g.in_h, LT.OW = g.in_w;
  LT.kh = g.kernel_h, LT.kw = g.kernel_w;
  LT.sh = 1, LT.sw = 1, LT.ph = ph, LT.pw = pw;
  LT.dh = p.dilation[0], LT.dw = p.dilation[1];
  LT.PH = (LT.OH - 1) + (LT.kh - 1) * LT.dh + 1;
  LT.PW = (LT.OW - 1) + (LT.kw - 1) * LT.dw + 1;
  LT.Q = LT.PW;
  LT.row_stride = LT.Q;
  return true;
}

// Offset of tap (ki, kj) in the padded, phase-split plane from the tap (0, 0) of the same
// output pixel.
std::vector<int64_t> tap_offsets(const DwLayout& L) {
  std::vector<int64_t> offs(static_cast<size_t>(L.kh * L.kw));
  for (int64_t ki = 0; ki < L.kh; ++ki)
    for (int64_t kj = 0; kj < L.kw; ++kj) {
      const int64_t x = kj * L.dw;
      offs[static_cast<size_t>(ki * L.kw + kj)] =
          ki * L.dh * L.row_stride + (x % L.sw) * L.Q + x / L.sw;
    }
  return offs;
}

}  // namespace

// The same loops compiled for each ISA; active_isa() picks one at run time.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
namespace isa_avx512 {
namespace {
constexpr int kVecBytes = 64;
#include "depthwise_conv2d_kernels.inc"
}
}  // namespace isa_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
namespace {
constexpr int kVecBytes = 32;
#include "depthwise_conv2d_kernels.inc"
}
}  // namespace isa_avx2
#pragma GCC pop_options

namespace isa_portable {
namespace {
constexpr int kVecBytes = 16;  // SSE2, part of every x86-64
#include "depthwise_conv2d_kernels.inc"
}
}  // namespace isa_portable

namespace {

template <typename T>
void run_jobs(const DwJob<T>& job, int64_t jobs, bool backward) {
  using Fn = void (*)(const DwJob<T>&, int64_t, int64_t);
  Fn fn;
  switch (active_isa()) {
    case Isa::Avx512:
      fn = backward ? &isa_avx512::backward_range<T> : &isa_avx512::forward_range<T>;
      break;
    case Isa::Avx2:
      fn = backward ? &isa_avx2::backward_range<T> : &isa_avx2::forward_range<T>;
      break;
    default:
      fn = backward ? &isa_portable::backward_range<T> : &isa_portable::forward_range<T>;
  }
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) { fn(job, begin, end); });
}

template <typename T>
DwJob<T> make_job(const Conv2dGeometry& g, const Conv2dParams& p) {
  DwJob<T> J{};
  J.L = make_layout(g, p);
  J.in_channels = g.in_channels;
  J.out_channels = g.out_channels;
  J.groups = g.groups;
  J.cin_g = g.in_channels_per_group();
  J.cout_g = g.out_channels_per_group();
  return J;
}

}  // namespace

template <typename T>
void depthwise_conv2d_forward(const T* in, const T* w, const T* bias, T* out,
                              const Conv2dGeometry& g, const Conv2dParams& p) {
  DwJob<T> J = make_job<T>(g, p);
  J.in = in, J.w = w, J.bias = bias, J.out = out;
  const std::vector<int64_t> offs = tap_offsets(J.L);
  J.offs = offs.data();
  run_jobs(J, g.batch * g.groups, false);
}

template <typename T>
void depthwise_conv2d_backward(const T* grad_output, const T* in, const T* w, T* grad_input,
                               T* grad_weight, const Conv2dGeometry& g, const Conv2dParams& p) {
  DwJob<T> J = make_job<T>(g, p);
  J.in = in, J.w = w, J.grad_output = grad_output, J.grad_input = grad_input;
  const std::vector<int64_t> offs = tap_offsets(J.L);
  J.offs = offs.data();
  std::vector<int64_t> offs_transposed;
  const int64_t kk = g.kernel_h * g.kernel_w;
  std::vector<T> w_transposed;
  if (grad_input != nullptr && make_transposed_layout(g, p, J.LT)) {
    const int64_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
    w_transposed.resize(static_cast<size_t>(g.out_channels * cin_g * kk));
    for (int64_t grp = 0; grp < g.groups; ++grp)
      for (int64_t c = 0; c < cin_g; ++c)
        for (int64_t m = 0; m < cout_g; ++m)
          for (int64_t t = 0; t < kk; ++t)
            w_transposed[((grp * cin_g + c) * cout_g + m) * kk + t] =
                w[((grp * cout_g + m) * cin_g + c) * kk + (kk - 1 - t)];
    J.w_transposed = w_transposed.data();
    offs_transposed = tap_offsets(J.LT);
    J.offs_transposed = offs_transposed.data();
  }
  std::vector<T> partial;
  if (grad_weight != nullptr) {
    partial.resize(static_cast<size_t>(g.batch * g.out_channels * g.in_channels_per_group() * kk));
    J.partial = partial.data();
  }
  run_jobs(J, g.batch * g.groups, true);
  if (grad_weight != nullptr) {
    // Sum the per-image partials in batch order: independent of how jobs met threads.
    const int64_t per_image = g.out_channels * g.in_channels_per_group() * kk;
    for (int64_t i = 0; i < per_image; ++i) grad_weight[i] = T(0);
    for (int64_t n = 0; n < g.batch; ++n) {
      const T* src = partial.data() + n * per_image;
      for (int64_t i = 0; i < per_image; ++i) grad_weight[i] += src[i];
    }
  }
}

template void depthwise_conv2d_forward<float>(const float*, const float*, const float*, float*,
                                              const Conv2dGeometry&, const Conv2dParams&);
template void depthwise_conv2d_forward<double>(const double*, const double*, const double*,
                                               double*, const Conv2dGeometry&,
                                               const Conv2dParams&);
template void depthwise_conv2d_backward<float>(const float*, const float*, const float*, float*,
                                               float*, const Conv2dGeometry&,
                                               const Conv2dParams&);
template void depthwise_conv2d_backward<double>(const double*, const double*, const double*,
                                                double*, double*, const Conv2dGeometry&,
                                                const Conv2dParams&);

}  // namespace cnnext::cpu
