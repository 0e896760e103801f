#include "grouped_conv2d_nhwc.h"

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

struct GroupedShape {
  int64_t N, C, H, W, OH, OW, K;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename T>
struct GroupedJob {
  GroupedShape S;
  const T* in;
  const T* wt;    // [kh*kw][K][C]: per tap and reduction step, a vector over output channels
  const T* bias;  // [C], zeros where there is none
  T* out;
  const T* zeros;  // [C]: what a tap outside the image reads
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

bool grouped_nhwc_applies(const Conv2dGeometry& g, bool float64) {
  const int64_t k = g.in_channels_per_group();
  const int64_t vector_bytes =
      active_isa() == Isa::Avx512 ? 64 : active_isa() == Isa::Avx2 ? 32 : 16;
  const int64_t lanes = vector_bytes / (float64 ? 8 : 4);
  return g.groups > 1 && g.out_channels_per_group() == k && (k == 2 || k == 4 || k == 8) &&
         k < lanes && g.in_channels >= 16;
}

template <typename T>
void grouped_nhwc_forward(const T* in, const T* w, const T* bias, T* out,
                          const Conv2dGeometry& g, const Conv2dParams& p) {
  GroupedShape S{g.batch,       g.in_channels, g.in_h,        g.in_w,        g.out_h,
                 g.out_w,       g.in_channels_per_group(),    g.kernel_h,    g.kernel_w,
                 p.stride[0],   p.stride[1],   p.padding[0],  p.padding[1],  p.dilation[0],
                 p.dilation[1]};
  const int64_t taps = S.kh * S.kw;
  // OIHW [C][K][kh][kw] -> [tap][ci][C].
  std::vector<T> wt(static_cast<size_t>(taps * S.K * S.C));
  for (int64_t oc = 0; oc < S.C; ++oc)
    for (int64_t ci = 0; ci < S.K; ++ci)
      for (int64_t t = 0; t < taps; ++t)
        wt[static_cast<size_t>((t * S.K + ci) * S.C + oc)] = w[(oc * S.K + ci) * taps + t];
  std::vector<T> b(static_cast<size_t>(S.C), T(0));
  if (bias != nullptr) std::copy(bias, bias + S.C, b.begin());
  const std::vector<T> zeros(static_cast<size_t>(S.C), T(0));
  const GroupedJob<T> J{S, in, wt.data(), b.data(), out, zeros.data()};
  using Fn = void (*)(const GroupedJob<T>&, int64_t, int64_t);
  const Isa isa = active_isa();
  const Fn fn = isa == Isa::Avx512 ? &grouped_avx512::grouped_forward<T>
                : isa == Isa::Avx2 ? &grouped_avx2::grouped_forward<T>
                                   : &grouped_portable::grouped_forward<T>;
  // Output rows are independent: each output is one FMA chain whichever thread runs it.
  at::parallel_for(0, S.N * S.OH, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

template void grouped_nhwc_forward<float>(const float*, const float*, const float*, float*,
                                          const Conv2dGeometry&, const Conv2dParams&);
template void grouped_nhwc_forward<double>(const double*, const double*, const double*,
                                           double*, const Conv2dGeometry&,
                                           const Conv2dParams&);

}  // namespace cnnext::cpu
