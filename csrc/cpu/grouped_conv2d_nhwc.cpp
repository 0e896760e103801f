#include "grouped_conv2d_nhwc.h"

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "gemm/gemm.h"
#include "gather_taps.h"
#include "grouped_conv2d_bf16_dot.h"

namespace cnnext::cpu {
namespace {

struct GroupedShape {
  int64_t N, C, H, W, OH, OW, K;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// T: the arithmetic type; St: how input and output are stored (T, or bfloat16 bits).
template <typename T, typename St = T>
struct GroupedJob {
  GroupedShape S;
  const St* in;
  const T* wt;    // [vector][kh*kw][K][L]: per channel vector, tap and reduction step, a
                  // vector of weights (step_channel() says which input channel a step reads)
  const T* bias;  // [C], zeros where there is none
  St* out;
  const St* zeros;  // [C]: what a tap outside the image reads
};

template <typename T, typename St = T>
struct GroupedGradJob {
  GroupedShape S;
  const St* grad_output;
  const St* in;
  const St* zeros;  // [C]: what a tap outside the image reads
};

}  // namespace

// The same loops compiled for each ISA; active_isa() picks one at run time.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
namespace grouped_avx512 {
namespace {
constexpr int kVecBytes = 64;
#include "grouped_conv2d_nhwc_kernels.inc"
}  // namespace
}  // namespace grouped_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace grouped_avx2 {
namespace {
constexpr int kVecBytes = 32;
#include "grouped_conv2d_nhwc_kernels.inc"
}  // namespace
}  // namespace grouped_avx2
#pragma GCC pop_options

namespace grouped_portable {
namespace {
constexpr int kVecBytes = 16;  // SSE2, part of every x86-64
#include "grouped_conv2d_nhwc_kernels.inc"
}  // namespace
}  // namespace grouped_portable

namespace {

// Lanes of a T vector on the ISA that will run.
template <typename T>
int64_t vector_lanes() {
  const Isa isa = active_isa();
  const int64_t bytes = isa == Isa::Avx512 ? 64 : isa == Isa::Avx2 ? 32 : 16;
  return bytes / static_cast<int64_t>(sizeof(T));
}

}  // namespace

bool grouped_nhwc_applies(const Conv2dGeometry& g, bool float64) {
  const int64_t k = g.in_channels_per_group();
  const int64_t lanes = float64 ? vector_lanes<double>() : vector_lanes<float>();
  return g.groups > 1 && g.out_channels_per_group() == k && (k == 2 || k == 4 || k == 8) &&
         k < lanes && g.in_channels >= 16;
}

namespace {

// The input channel (within the group) that reduction step s of the kernel feeds to output
// channel o (o's place in its group: o % K). Groups of up to one 128-bit lane: channel s.
// Wider groups (8 float32, two 128-bit lanes h = 0, 1): steps 0-3 read element s of o's own
// 128-bit lane, steps 4-7 element s - 4 of the other one (grouped_conv2d_nhwc_kernels.inc).
int64_t step_channel(int64_t K, int64_t elem_bytes, int64_t s, int64_t o) {
  const int64_t lane_elems = 16 / elem_bytes;
  if (K <= lane_elems) return s;
  const int64_t h = (o % K) / lane_elems;
  return s < lane_elems ? h * lane_elems + s : (h ^ 1) * lane_elems + (s - lane_elems);
}

// OIHW [C][K][kh][kw] -> GroupedJob::wt in the arithmetic type T: per channel vector (at
// c0 = min(v * L, C - L)) [tap][step][L], so a vector's weights lie together and stay in L1
// (at C elements apart, 256 channels put a 3x3 kernel's 72 lines in 4 cache sets).
template <typename T, typename W>
std::vector<T> tap_major_weight(const W* w, const GroupedShape& S) {
  const int64_t taps = S.kh * S.kw, L = vector_lanes<T>(), vectors = (S.C + L - 1) / L;
  std::vector<T> wt(static_cast<size_t>(vectors * taps * S.K * L));
  for (int64_t v = 0; v < vectors; ++v) {
    const int64_t c0 = std::min(v * L, S.C - L);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t oc = c0 + l;
      for (int64_t s = 0; s < S.K; ++s) {
        const int64_t ci = step_channel(S.K, sizeof(T), s, oc);
        for (int64_t t = 0; t < taps; ++t)
          wt[static_cast<size_t>(((v * taps + t) * S.K + s) * L + l)] =
              static_cast<T>(w[(oc * S.K + ci) * taps + t]);
      }
    }
  }
  return wt;
}

GroupedShape make_shape(const Conv2dGeometry& g, const Conv2dParams& p) {
  return GroupedShape{g.batch,     g.in_channels, g.in_h,       g.in_w,       g.out_h,
                      g.out_w,     g.in_channels_per_group(),   g.kernel_h,   g.kernel_w,
                      p.stride[0], p.stride[1],   p.padding[0], p.padding[1], p.dilation[0],
                      p.dilation[1]};
}

// T: arithmetic type; St: storage of input and output; W: storage of weight and bias.
template <typename T, typename St, typename W>
void run_forward(const St* in, const W* w, const W* bias, St* out, const Conv2dGeometry& g,
                 const Conv2dParams& p) {
  if constexpr (std::is_same_v<St, uint16_t> && std::is_same_v<W, c10::BFloat16>) {
    if (grouped_bf16_dot_applies(g)) {  // AVX512-BF16 pair dot products
      grouped_bf16_dot_forward(in, reinterpret_cast<const uint16_t*>(w),
                               reinterpret_cast<const uint16_t*>(bias), out, g, p);
      return;
    }
  }
  const GroupedShape S = make_shape(g, p);
  const std::vector<T> wt = tap_major_weight<T>(w, S);
  std::vector<T> b(static_cast<size_t>(S.C), T(0));
  if (bias != nullptr)
    for (int64_t c = 0; c < S.C; ++c) b[static_cast<size_t>(c)] = static_cast<T>(bias[c]);
  const std::vector<St> zeros(static_cast<size_t>(S.C), St(0));
  const GroupedJob<T, St> J{S, in, wt.data(), b.data(), out, zeros.data()};
  using Fn = void (*)(const GroupedJob<T, St>&, int64_t, int64_t);
  const Isa isa = active_isa();
  const Fn fn = isa == Isa::Avx512 ? &grouped_avx512::grouped_forward<T, St>
                : isa == Isa::Avx2 ? &grouped_avx2::grouped_forward<T, St>
                                   : &grouped_portable::grouped_forward<T, St>;
  // Output rows are independent: each output is one chain of operations whichever thread
  // runs it.
  at::parallel_for(0, S.N * S.OH, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

}  // namespace

template <typename T>
void grouped_nhwc_forward(const T* in, const T* w, const T* bias, T* out,
                          const Conv2dGeometry& g, const Conv2dParams& p) {
  run_forward<T>(in, w, bias, out, g, p);
}

void grouped_nhwc_forward_bf16(const c10::BFloat16* in, const c10::BFloat16* w,
                               const c10::BFloat16* bias, c10::BFloat16* out,
                               const Conv2dGeometry& g, const Conv2dParams& p) {
  // bfloat16 (0 is all zero bits) as uint16_t lanes; weights widened exactly to float32.
  run_forward<float>(reinterpret_cast<const uint16_t*>(in), w, bias,
                     reinterpret_cast<uint16_t*>(out), g, p);
}

bool grouped_grad_input_is_transposed_forward(const Conv2dGeometry& g, const Conv2dParams& p) {
  return p.stride[0] == 1 && p.stride[1] == 1 &&
         (g.kernel_h - 1) * p.dilation[0] >= p.padding[0] &&
         (g.kernel_w - 1) * p.dilation[1] >= p.padding[1];
}

namespace {

// grad_input of a stride-1 layer is the forward of the transposed problem: grad_output
// convolved with each group's flipped, transposed kernel, padded by (k - 1) * d - p. Other
// layers (strided, or padding past the kernel) gather per input pixel
// (grouped_grad_input_rows) with the transposed kernel as it lies.
template <typename T, typename St, typename W>
void run_grad_input(const St* grad_output, const W* w, St* grad_input, const Conv2dGeometry& g,
                    const Conv2dParams& p) {
  const int64_t K = g.in_channels_per_group(), taps = g.kernel_h * g.kernel_w;
  const bool flip = grouped_grad_input_is_transposed_forward(g, p);
  // W'[gi * K + ci][co][tap] = w[gi * K + co][ci][tap] (flipped: tap -> taps - 1 - tap)
  std::vector<W> transposed(static_cast<size_t>(g.out_channels * K * taps));
  for (int64_t gi = 0; gi < g.groups; ++gi)
    for (int64_t co = 0; co < K; ++co)
      for (int64_t ci = 0; ci < K; ++ci)
        for (int64_t k = 0; k < taps; ++k)
          transposed[static_cast<size_t>(((gi * K + ci) * K + co) * taps +
                                         (flip ? taps - 1 - k : k))] =
              w[((gi * K + co) * K + ci) * taps + k];
  if (flip) {
    Conv2dGeometry tg = g;
    tg.in_h = g.out_h, tg.in_w = g.out_w, tg.out_h = g.in_h, tg.out_w = g.in_w;
    Conv2dParams tp = p;
    tp.padding = {(g.kernel_h - 1) * p.dilation[0] - p.padding[0],
                  (g.kernel_w - 1) * p.dilation[1] - p.padding[1]};
    run_forward<T>(grad_output, transposed.data(), static_cast<const W*>(nullptr), grad_input,
                   tg, tp);
    return;
  }
  if constexpr (std::is_same_v<St, uint16_t> && std::is_same_v<W, c10::BFloat16>) {
    if (grouped_bf16_dot_applies(g)) {  // AVX512-BF16 pair dot products
      grouped_bf16_dot_grad_input(grad_output,
                                  reinterpret_cast<const uint16_t*>(transposed.data()),
                                  grad_input, g, p);
      return;
    }
  }
  const GroupedShape S = make_shape(g, p);
  const std::vector<T> wt = tap_major_weight<T>(transposed.data(), S);
  const std::vector<St> zeros(static_cast<size_t>(S.C), St(0));
  const GroupedJob<T, St> J{S, grad_output, wt.data(), nullptr, grad_input, zeros.data()};
  using Fn = void (*)(const GroupedJob<T, St>&, int64_t, int64_t);
  const Isa isa = active_isa();
  const Fn fn = isa == Isa::Avx512 ? &grouped_avx512::grouped_grad_input<T, St>
                : isa == Isa::Avx2 ? &grouped_avx2::grouped_grad_input<T, St>
                                   : &grouped_portable::grouped_grad_input<T, St>;
  // Input rows are independent: each gradient is one chain whichever thread runs it.
  at::parallel_for(0, S.N * S.H, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

}  // namespace

template <typename T>
void grouped_nhwc_grad_input(const T* grad_output, const T* w, T* grad_input,
                             const Conv2dGeometry& g, const Conv2dParams& p) {
  run_grad_input<T>(grad_output, w, grad_input, g, p);
}

void grouped_nhwc_grad_input_bf16(const c10::BFloat16* grad_output, const c10::BFloat16* w,
                                  c10::BFloat16* grad_input, const Conv2dGeometry& g,
                                  const Conv2dParams& p) {
  run_grad_input<float>(reinterpret_cast<const uint16_t*>(grad_output), w,
                        reinterpret_cast<uint16_t*>(grad_input), g, p);
}

void grouped_nhwc_grad_weight_bf16(const c10::BFloat16* grad_output, const c10::BFloat16* in,
                                   c10::BFloat16* grad_weight, const Conv2dGeometry& g,
                                   const Conv2dParams& p) {
  using T = float;
  const GroupedShape S = make_shape(g, p);
  const Isa isa = active_isa();
  const int64_t L = vector_lanes<T>();
  const int64_t taps = S.kh * S.kw, vectors = (S.C + L - 1) / L, rows = S.N * S.OH;
  // Fixed chunks of output rows (not a function of the thread count), summed in chunk order.
  constexpr int64_t kMaxChunks = 16;
  const int64_t chunk_rows = (rows + std::min(rows, kMaxChunks) - 1) / std::min(rows, kMaxChunks);
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  const int64_t slot = taps * S.K * L;  // one (chunk, vector) task's sums
  std::vector<T> partial(static_cast<size_t>(chunks * vectors * slot));
  const std::vector<uint16_t> zeros(static_cast<size_t>(S.C), 0);
  const GroupedGradJob<T, uint16_t> J{S, reinterpret_cast<const uint16_t*>(grad_output),
                                      reinterpret_cast<const uint16_t*>(in), zeros.data()};
  using Fn = void (*)(const GroupedGradJob<T, uint16_t>&, int64_t, int64_t, int64_t, T*, T*);
  const Fn fn = isa == Isa::Avx512 ? &grouped_avx512::grouped_grad_weight<T>
                : isa == Isa::Avx2 ? &grouped_avx2::grouped_grad_weight<T>
                                   : &grouped_portable::grouped_grad_weight<T>;
  // With AVX512-BF16 (16 lanes, as L here), pairs of output pixels take pair dot products.
  const bool dot = grouped_bf16_dot_applies(g) && S.K <= 8 && L == 16;
  const GroupedDotGradJob D{S.C,  S.H,  S.W,  S.OH, S.OW, S.K,  S.kh,    S.kw,
                            S.sh, S.sw, S.ph, S.pw, S.dh, S.dw, J.grad_output, J.in,
                            J.zeros};
  at::parallel_for(0, chunks * vectors, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> rotated(static_cast<size_t>((S.OW + 1) * S.K * L));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task / vectors, v = task % vectors;
      const int64_t row0 = chunk * chunk_rows, row1 = std::min(rows, (chunk + 1) * chunk_rows);
      if (dot) {
        T* acc = partial.data() + task * slot;
        std::fill(acc, acc + slot, T(0));
        grouped_bf16_dot_grad_weight_task(D, row0, row1, std::min(v * L, S.C - L), acc,
                                          reinterpret_cast<uint32_t*>(rotated.data()));
      } else {
        fn(J, row0, row1, std::min(v * L, S.C - L), partial.data() + task * slot,
           rotated.data());
      }
    }
  });
  // grad_weight[oc][i][t]: in the rotated sums, lane c = G * K + i of rotation r holds the
  // weight to output G * K + (i + r) % K. The last vector may overlap the one before; its
  // lanes are read only for the channels past it.
  at::parallel_for(0, S.C, 16, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t v = std::min(c / L, vectors - 1), lane = c - std::min(v * L, S.C - L);
      const int64_t group_first = c / S.K * S.K, i = c % S.K;
      for (int64_t r = 0; r < S.K; ++r) {
        const int64_t oc = group_first + (i + r) % S.K;
        for (int64_t t = 0; t < taps; ++t) {
          T sum = T(0);
          for (int64_t chunk = 0; chunk < chunks; ++chunk)
            sum += partial[static_cast<size_t>((chunk * vectors + v) * slot +
                                               (t * S.K + r) * L + lane)];
          grad_weight[(oc * S.K + i) * taps + t] = static_cast<c10::BFloat16>(sum);
        }
      }
    }
  });
}

template void grouped_nhwc_forward<float>(const float*, const float*, const float*, float*,
                                          const Conv2dGeometry&, const Conv2dParams&);
template void grouped_nhwc_forward<double>(const double*, const double*, const double*,
                                           double*, const Conv2dGeometry&,
                                           const Conv2dParams&);
template void grouped_nhwc_grad_input<float>(const float*, const float*, float*,
                                             const Conv2dGeometry&, const Conv2dParams&);
template void grouped_nhwc_grad_input<double>(const double*, const double*, double*,
                                              const Conv2dGeometry&, const Conv2dParams&);

}  // namespace cnnext::cpu
