// The bfloat16 forward of the channels_last grouped conv on AVX512-BF16
// (grouped_conv2d_bf16_dot.h). A vector holds 16 output channels (float32 accumulators) of one
// pixel, whole groups of K = 2, 4 or 8 (16: below). The input's 16 channels at the same place
// are 8 bfloat16 pairs (one 256-bit load, not widened); one 64-bit permute gives each 128-bit
// lane the pairs of its own group(s), then step s of K / 2 broadcasts a pair inside each
// 128-bit lane (an in-lane shuffle) and one vdpbf16ps adds two products per lane: K / 2
// shuffles and pair dot products per pixel and tap, where the float32 kernel takes K permutes,
// K multiply-adds and a widening. Compiled under a target pragma; called only where
// bf16::dot_available() holds.
#include "grouped_conv2d_bf16_dot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "gemm/bf16_dot.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")

namespace cnnext::cpu {
namespace {

constexpr int64_t kLanes = 16;  // float32 outputs a vector
constexpr int kTilePixels = 12;

struct DotJob {
  int64_t C, H, W, OH, OW, K, kh, kw, sh, sw, ph, pw, dh, dw;
  const uint16_t* in;
  // [vector][tap][step][16]: (w[c][2s][tap], w[c][2s + 1][tap]) as bfloat16 bits for channel
  // c = c0 + lane of the vector at c0; a vector's pairs lie together, so they stay in L1 (at
  // C elements apart, 256 channels put a 3x3 kernel's 36 lines in 4 cache sets).
  const uint32_t* pairs;
  const float* bias;      // [C]
  uint16_t* out;
  const uint16_t* zeros;  // [C]
};

template <int K>
__m512i expand_groups(__m256i raw) {
  // K = 8: a group's 4 pairs fill both 128-bit lanes it spans (qwords 0 1 0 1 2 3 2 3);
  // K = 2, 4: 128-bit lane j holds qword j twice (its group's pairs, or its 2 groups' pairs).
  const __m512i index = K == 8 ? _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3)
                               : _mm512_setr_epi64(0, 0, 1, 1, 2, 2, 3, 3);
  return _mm512_permutexvar_epi64(index, _mm512_castsi256_si512(raw));
}

// Step s's in-lane shuffle: K = 4, 8 broadcast pair s of the lane; K = 2 gives outputs 0-1 of
// the lane pair 0 (their group) and outputs 2-3 pair 1.
template <int K, int S>
__m512i step_pairs(__m512i x) {
  if constexpr (K == 2) return _mm512_shuffle_epi32(x, static_cast<_MM_PERM_ENUM>(0x50));
  return _mm512_shuffle_epi32(x, static_cast<_MM_PERM_ENUM>(S * 0x55));
}

template <int K, int... S>
inline void tap_steps(const __m512i (&x)[kTilePixels], const uint32_t* w,
                      __m512 (&acc)[kTilePixels], std::integer_sequence<int, S...>) {
  (
      [&] {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + S * kLanes);
#pragma GCC unroll 12
        for (int p = 0; p < kTilePixels; ++p)
          acc[p] = _mm512_dpbf16_ps(acc[p], (__m512bh)step_pairs<K, S>(x[p]), wv);
      }(),
      ...);
}

// K = 16: a vector is one group, and step s broadcasts the group's pair s from memory to every
// lane (a load, no shuffle).
inline void tap_steps_whole_group(const uint16_t* const (&px)[kTilePixels], const uint32_t* w,
                                  __m512 (&acc)[kTilePixels]) {
#pragma GCC unroll 8
  for (int s = 0; s < 8; ++s) {
    const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + s * kLanes);
#pragma GCC unroll 12
    for (int p = 0; p < kTilePixels; ++p) {
      uint32_t pair;
      std::memcpy(&pair, px[p] + 2 * s, sizeof pair);
      acc[p] = _mm512_dpbf16_ps(acc[p], (__m512bh)_mm512_set1_epi32(static_cast<int>(pair)), wv);
    }
  }
}

template <int K>
void forward_rows(const DotJob& J, int64_t begin, int64_t end) {
  constexpr int P = kTilePixels;
  const int64_t vectors = (J.C + kLanes - 1) / kLanes;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / J.OH, oy = row % J.OH;
    const uint16_t* image = J.in + n * J.H * J.W * J.C;
    uint16_t* out_row = J.out + row * J.OW * J.C;
    for (int64_t ox0 = 0; ox0 < J.OW; ox0 += P) {
      const int64_t np = std::min<int64_t>(P, J.OW - ox0);
      for (int64_t v = 0; v < vectors; ++v) {
        const int64_t c0 = std::min(v * kLanes, J.C - kLanes);
        const uint32_t* pairs = J.pairs + v * J.kh * J.kw * (K / 2) * kLanes;
        const __m512 b = _mm512_loadu_ps(J.bias + c0);
        __m512 acc[P];
#pragma GCC unroll 12
        for (int p = 0; p < P; ++p) acc[p] = b;
        for (int64_t r = 0; r < J.kh; ++r) {
          const int64_t iy = oy * J.sh - J.ph + r * J.dh;
          if (iy < 0 || iy >= J.H) continue;
          const uint16_t* in_row = image + iy * J.W * J.C;
          for (int64_t s = 0; s < J.kw; ++s) {
            const uint16_t* px[P];
#pragma GCC unroll 12
            for (int p = 0; p < P; ++p) {
              const int64_t ix = (ox0 + p) * J.sw - J.pw + s * J.dw;
              px[p] = (p < np && ix >= 0 && ix < J.W ? in_row + ix * J.C : J.zeros) + c0;
            }
            const uint32_t* w = pairs + (r * J.kw + s) * (K / 2) * kLanes;
            if constexpr (K == 16) {
              tap_steps_whole_group(px, w, acc);
            } else {
              __m512i x[P];
#pragma GCC unroll 12
              for (int p = 0; p < P; ++p)
                x[p] = expand_groups<K>(
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[p])));
              tap_steps<K>(x, w, acc, std::make_integer_sequence<int, K / 2>{});
            }
          }
        }
        for (int64_t p = 0; p < np; ++p)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_row + (ox0 + p) * J.C + c0),
                              (__m256i)_mm512_cvtneps_pbh(acc[p]));
      }
    }
  }
}

}  // namespace

bool grouped_bf16_dot_applies(const Conv2dGeometry& g) {
  const int64_t k = g.in_channels_per_group();
  return bf16::dot_available() && g.groups > 1 && g.out_channels_per_group() == k &&
         (k == 2 || k == 4 || k == 8 || k == 16) && g.in_channels >= kLanes;
}

void grouped_bf16_dot_forward(const uint16_t* in, const uint16_t* w, const uint16_t* bias,
                              uint16_t* out, const Conv2dGeometry& g, const Conv2dParams& p) {
  const int64_t K = g.in_channels_per_group(), C = g.in_channels;
  const int64_t taps = g.kernel_h * g.kernel_w, steps = K / 2;
  const int64_t vectors = (C + kLanes - 1) / kLanes;
  std::vector<uint32_t> pairs(static_cast<size_t>(vectors * taps * steps * kLanes));
  for (int64_t v = 0; v < vectors; ++v) {
    const int64_t c0 = std::min(v * kLanes, C - kLanes);
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t s = 0; s < steps; ++s)
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t c = c0 + l;
          pairs[static_cast<size_t>(((v * taps + t) * steps + s) * kLanes + l)] =
              uint32_t(w[(c * K + 2 * s) * taps + t]) |
              uint32_t(w[(c * K + 2 * s + 1) * taps + t]) << 16;
        }
  }
  std::vector<float> b(static_cast<size_t>(C), 0.0f);
  if (bias != nullptr)
    for (int64_t c = 0; c < C; ++c) {
      const uint32_t bits = uint32_t(bias[c]) << 16;  // a bfloat16 is a float32's high half
      std::memcpy(&b[static_cast<size_t>(c)], &bits, sizeof(float));
    }
  const std::vector<uint16_t> zeros(static_cast<size_t>(C), 0);
  const DotJob J{C,           g.in_h,      g.in_w,      g.out_h,        g.out_w,
                 K,           g.kernel_h,  g.kernel_w,  p.stride[0],    p.stride[1],
                 p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], in,
                 pairs.data(), b.data(),   out,         zeros.data()};
  using Fn = void (*)(const DotJob&, int64_t, int64_t);
  const Fn fn = K == 2   ? &forward_rows<2>
                : K == 4 ? &forward_rows<4>
                : K == 8 ? &forward_rows<8>
                         : &forward_rows<16>;
  // Output rows are independent: each output is one chain of operations whichever thread
  // runs it.
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

}  // namespace cnnext::cpu

#pragma GCC pop_options

#else

namespace cnnext::cpu {
bool grouped_bf16_dot_applies(const Conv2dGeometry&) { return false; }
void grouped_bf16_dot_forward(const uint16_t*, const uint16_t*, const uint16_t*, uint16_t*,
                              const Conv2dGeometry&, const Conv2dParams&) {}
}  // namespace cnnext::cpu

#endif
