// The bfloat16 passes of the channels_last grouped conv on AVX512-BF16
// (grouped_conv2d_bf16_dot.h). Forward: a vector holds 16 output channels (float32
// accumulators) of one pixel, whole groups of K = 2, 4 or 8 (16: below). The input's 16
// channels at the same place are 8 bfloat16 pairs (one 256-bit load, not widened); one 64-bit
// permute gives each 128-bit lane the pairs of its own group(s), then step s of K / 2
// broadcasts a pair inside each 128-bit lane (an in-lane shuffle) and one vdpbf16ps adds two
// products per lane: K / 2 shuffles and pair dot products per pixel and tap, where the float32
// kernel takes K permutes, K multiply-adds and a widening. grad_input: the same steps on
// grad_output with the weight transposed within each group, gathered per input pixel.
// grad_weight: pairs of output pixels interleaved into one vector of pairs, the rotated sums of
// grouped_conv2d_nhwc_kernels.inc as pair dot products. Compiled under a target pragma; called
// only where bf16::dot_available() holds.
#include "grouped_conv2d_bf16_dot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "gemm/bf16_dot.h"
#include "gather_taps.h"

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

// acc[p] += one tap's products for the tile's input pixels px[p] (at the vector's channels).
template <int K>
inline void accumulate_tap(const uint16_t* const (&px)[kTilePixels], const uint32_t* w,
                           __m512 (&acc)[kTilePixels]) {
  if constexpr (K == 16) {
    tap_steps_whole_group(px, w, acc);
  } else {
    __m512i x[kTilePixels];
#pragma GCC unroll 12
    for (int p = 0; p < kTilePixels; ++p)
      x[p] = expand_groups<K>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[p])));
    tap_steps<K>(x, w, acc, std::make_integer_sequence<int, K / 2>{});
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
            accumulate_tap<K>(px, pairs + (r * J.kw + s) * (K / 2) * kLanes, acc);
          }
        }
        for (int64_t p = 0; p < np; ++p)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_row + (ox0 + p) * J.C + c0),
                              (__m256i)_mm512_cvtneps_pbh(acc[p]));
      }
    }
  }
}

// grad_input of a strided layer, gathered per input pixel as in grouped_conv2d_nhwc_kernels.inc
// (grouped_grad_input_rows): J.in is grad_output, J.out grad_input, J.pairs the weight
// transposed within each group; jobs are input rows (n, iy).
template <int K>
void grad_input_rows(const DotJob& J, int64_t begin, int64_t end) {
  constexpr int P = kTilePixels;
  const int64_t vectors = (J.C + kLanes - 1) / kLanes;
  std::vector<int64_t> taps_y, taps_x;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / J.H, iy = row % J.H;
    taps_reaching_row(taps_y, iy, J.kh, J.sh, J.ph, J.dh, J.OH);
    const uint16_t* go_n = J.in + n * J.OH * J.OW * J.C;
    uint16_t* gi_row = J.out + row * J.W * J.C;
    for (int64_t px0 = 0; px0 < std::min(J.sw, J.W); ++px0) {
      taps_reaching_phase(taps_x, px0, J.kw, J.sw, J.pw, J.dw);
      const int64_t cols = (J.W - px0 + J.sw - 1) / J.sw;
      for (int64_t j0 = 0; j0 < cols; j0 += P) {
        const int64_t np = std::min<int64_t>(P, cols - j0);
        for (int64_t v = 0; v < vectors; ++v) {
          const int64_t c0 = std::min(v * kLanes, J.C - kLanes);
          const uint32_t* pairs = J.pairs + v * J.kh * J.kw * (K / 2) * kLanes;
          __m512 acc[P];
#pragma GCC unroll 12
          for (int p = 0; p < P; ++p) acc[p] = _mm512_setzero_ps();
          for (size_t qy = 0; qy < taps_y.size(); qy += 2) {
            const int64_t r = taps_y[qy];
            const uint16_t* go_row = go_n + taps_y[qy + 1] * J.OW * J.C;
            for (size_t qx = 0; qx < taps_x.size(); qx += 2) {
              const int64_t s = taps_x[qx], shift = taps_x[qx + 1];
              const uint16_t* px[P];
#pragma GCC unroll 12
              for (int p = 0; p < P; ++p) {
                const int64_t ox = j0 + p + shift;
                px[p] = (p < np && ox >= 0 && ox < J.OW ? go_row + ox * J.C : J.zeros) + c0;
              }
              accumulate_tap<K>(px, pairs + (r * J.kw + s) * (K / 2) * kLanes, acc);
            }
          }
          for (int64_t p = 0; p < np; ++p)
            _mm256_storeu_si256(
                reinterpret_cast<__m256i*>(gi_row + (px0 + J.sw * (j0 + p)) * J.C + c0),
                (__m256i)_mm512_cvtneps_pbh(acc[p]));
        }
      }
    }
  }
}

// Two pixels' 16 channels as 16 pairs (pixel a's value low, b's high).
inline __m512i interleave_pixels(__m256i a, __m256i b) {
  alignas(64) static constexpr uint16_t kIndex[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                      37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                      11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  return _mm512_permutex2var_epi16(_mm512_castsi256_si512(a), _mm512_load_si512(kIndex),
                                   _mm512_castsi256_si512(b));
}

inline __m256i load_pixel(const uint16_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// TT taps (ks0 ..) of kernel row kr over the row's pixel pairs: acc[tt][r] += the input pairs
// at the tap times the rotated grad_output pairs.
template <int K, int TT>
void grad_weight_taps(const GroupedDotGradJob& J, const uint16_t* in_row, int64_t c0,
                      int64_t kr, int64_t ks0, int64_t pixel_pairs, const uint32_t* rotated,
                      float* acc_mem) {
  __m512 acc[TT][K];
#pragma GCC unroll 4
  for (int tt = 0; tt < TT; ++tt)
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r)
      acc[tt][r] = _mm512_loadu_ps(acc_mem + ((kr * J.kw + ks0 + tt) * K + r) * kLanes);
  const auto pixel = [&](int64_t ox, int64_t ks) -> const uint16_t* {
    const int64_t ix = ox * J.sw - J.pw + ks * J.dw;
    return (ox < J.OW && ix >= 0 && ix < J.W ? in_row + ix * J.C : J.zeros) + c0;
  };
  for (int64_t j = 0; j < pixel_pairs; ++j) {
    __m512i x[TT];
#pragma GCC unroll 4
    for (int tt = 0; tt < TT; ++tt)
      x[tt] = interleave_pixels(load_pixel(pixel(2 * j, ks0 + tt)),
                                load_pixel(pixel(2 * j + 1, ks0 + tt)));
    const uint32_t* g = rotated + j * K * kLanes;
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r) {
      const __m512bh gr = (__m512bh)_mm512_loadu_si512(g + r * kLanes);
#pragma GCC unroll 4
      for (int tt = 0; tt < TT; ++tt)
        acc[tt][r] = _mm512_dpbf16_ps(acc[tt][r], (__m512bh)x[tt], gr);
    }
  }
#pragma GCC unroll 4
  for (int tt = 0; tt < TT; ++tt)
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r)
      _mm512_storeu_ps(acc_mem + ((kr * J.kw + ks0 + tt) * K + r) * kLanes, acc[tt][r]);
}

template <int K>
void grad_weight_task(const GroupedDotGradJob& J, int64_t row0, int64_t row1, int64_t c0,
                      float* acc_mem, uint32_t* rotated) {
  constexpr int kMaxTaps = K >= 8 ? 3 : 4;  // TT * K accumulators in registers
  __m512i rotate[K];
  for (int r = 0; r < K; ++r) {
    alignas(64) int32_t index[kLanes];
    for (int l = 0; l < kLanes; ++l) index[l] = (l / K) * K + (l % K + r) % K;
    rotate[r] = _mm512_load_si512(index);
  }
  const int64_t pixel_pairs = (J.OW + 1) / 2;
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t n = row / J.OH, oy = row % J.OH;
    const uint16_t* go_row = J.grad_output + row * J.OW * J.C + c0;
    for (int64_t j = 0; j < pixel_pairs; ++j) {
      const __m256i b = 2 * j + 1 < J.OW ? load_pixel(go_row + (2 * j + 1) * J.C)
                                         : _mm256_setzero_si256();
      const __m512i g = interleave_pixels(load_pixel(go_row + 2 * j * J.C), b);
      uint32_t* dst = rotated + j * K * kLanes;
      for (int r = 0; r < K; ++r)
        _mm512_storeu_si512(dst + r * kLanes, r == 0 ? g : _mm512_permutexvar_epi32(rotate[r], g));
    }
    const uint16_t* image = J.in + n * J.H * J.W * J.C;
    for (int64_t kr = 0; kr < J.kh; ++kr) {
      const int64_t iy = oy * J.sh - J.ph + kr * J.dh;
      if (iy < 0 || iy >= J.H) continue;
      const uint16_t* in_row = image + iy * J.W * J.C;
      for (int64_t ks = 0; ks < J.kw; ks += kMaxTaps) {
        const auto taps = [&](auto tt) {
          grad_weight_taps<K, decltype(tt)::value>(J, in_row, c0, kr, ks, pixel_pairs, rotated,
                                                   acc_mem);
        };
        switch (std::min<int64_t>(kMaxTaps, J.kw - ks)) {
          case 1: taps(std::integral_constant<int, 1>{}); break;
          case 2: taps(std::integral_constant<int, 2>{}); break;
          case 3: taps(std::integral_constant<int, 3>{}); break;
          default:
            if constexpr (kMaxTaps >= 4) taps(std::integral_constant<int, 4>{});
            break;
        }
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

namespace {

// OIHW [C][K][taps] bfloat16 -> DotJob::pairs.
std::vector<uint32_t> pack_pairs(const uint16_t* w, int64_t C, int64_t K, int64_t taps) {
  const int64_t vectors = (C + kLanes - 1) / kLanes, steps = K / 2;
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
  return pairs;
}

DotJob make_job(const Conv2dGeometry& g, const Conv2dParams& p) {
  DotJob J{};
  J.C = g.in_channels, J.H = g.in_h, J.W = g.in_w, J.OH = g.out_h, J.OW = g.out_w;
  J.K = g.in_channels_per_group(), J.kh = g.kernel_h, J.kw = g.kernel_w;
  J.sh = p.stride[0], J.sw = p.stride[1], J.ph = p.padding[0], J.pw = p.padding[1];
  J.dh = p.dilation[0], J.dw = p.dilation[1];
  return J;
}

}  // namespace

void grouped_bf16_dot_forward(const uint16_t* in, const uint16_t* w, const uint16_t* bias,
                              uint16_t* out, const Conv2dGeometry& g, const Conv2dParams& p) {
  DotJob J = make_job(g, p);
  const std::vector<uint32_t> pairs = pack_pairs(w, J.C, J.K, J.kh * J.kw);
  std::vector<float> b(static_cast<size_t>(J.C), 0.0f);
  if (bias != nullptr)
    for (int64_t c = 0; c < J.C; ++c) {
      const uint32_t bits = uint32_t(bias[c]) << 16;  // a bfloat16 is a float32's high half
      std::memcpy(&b[static_cast<size_t>(c)], &bits, sizeof(float));
    }
  const std::vector<uint16_t> zeros(static_cast<size_t>(J.C), 0);
  J.in = in, J.pairs = pairs.data(), J.bias = b.data(), J.out = out, J.zeros = zeros.data();
  using Fn = void (*)(const DotJob&, int64_t, int64_t);
  const Fn fn = J.K == 2   ? &forward_rows<2>
                : J.K == 4 ? &forward_rows<4>
                : J.K == 8 ? &forward_rows<8>
                           : &forward_rows<16>;
  // Output rows are independent: each output is one chain of operations whichever thread
  // runs it.
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

void grouped_bf16_dot_grad_input(const uint16_t* grad_output, const uint16_t* w_transposed,
                                 uint16_t* grad_input, const Conv2dGeometry& g,
                                 const Conv2dParams& p) {
  DotJob J = make_job(g, p);
  const std::vector<uint32_t> pairs = pack_pairs(w_transposed, J.C, J.K, J.kh * J.kw);
  const std::vector<uint16_t> zeros(static_cast<size_t>(J.C), 0);
  J.in = grad_output, J.pairs = pairs.data(), J.out = grad_input, J.zeros = zeros.data();
  using Fn = void (*)(const DotJob&, int64_t, int64_t);
  const Fn fn = J.K == 2   ? &grad_input_rows<2>
                : J.K == 4 ? &grad_input_rows<4>
                : J.K == 8 ? &grad_input_rows<8>
                           : &grad_input_rows<16>;
  // Input rows are independent: each gradient is one chain whichever thread runs it.
  at::parallel_for(0, g.batch * g.in_h, 1, [&](int64_t begin, int64_t end) { fn(J, begin, end); });
}

void grouped_bf16_dot_grad_weight_task(const GroupedDotGradJob& J, int64_t row0, int64_t row1,
                                       int64_t c0, float* acc, uint32_t* scratch) {
  switch (J.K) {
    case 2: grad_weight_task<2>(J, row0, row1, c0, acc, scratch); break;
    case 4: grad_weight_task<4>(J, row0, row1, c0, acc, scratch); break;
    case 8: grad_weight_task<8>(J, row0, row1, c0, acc, scratch); break;
  }
}

}  // namespace cnnext::cpu

#pragma GCC pop_options

#else

namespace cnnext::cpu {
bool grouped_bf16_dot_applies(const Conv2dGeometry&) { return false; }
void grouped_bf16_dot_forward(const uint16_t*, const uint16_t*, const uint16_t*, uint16_t*,
                              const Conv2dGeometry&, const Conv2dParams&) {}
void grouped_bf16_dot_grad_input(const uint16_t*, const uint16_t*, uint16_t*,
                                 const Conv2dGeometry&, const Conv2dParams&) {}
void grouped_bf16_dot_grad_weight_task(const GroupedDotGradJob&, int64_t, int64_t, int64_t,
                                       float*, uint32_t*) {}
}  // namespace cnnext::cpu

#endif
