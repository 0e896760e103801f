// The AVX512-BF16 panel product (bf16_dot.h): kMR x kNR float32 accumulators (28 zmm) over the
// whole reduction, then bias and one rounding. Compiled under a target pragma so the package
// needs no -march flag; only called where dot_available() holds.
#include "bf16_dot.h"

#include <cstdlib>
#include <string>

namespace cnnext::cpu::bf16 {

bool dot_available() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool cpu_has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  if (!cpu_has) return false;
  const char* env = std::getenv("CNNEXT_ISA");
  if (env == nullptr) return true;
  const std::string isa(env);
  return isa.empty() || isa == "auto" || isa == "avx512bf16" || isa == "amx";
#else
  return false;
#endif
}

}  // namespace cnnext::cpu::bf16

#if defined(__x86_64__) && defined(__GNUC__)
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <atomic>
#include <chrono>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")

namespace cnnext::cpu::bf16 {
namespace {

template <int R>
void product_rows(const PanelProduct& p) {
  __m512 acc[R][2];
  const int64_t n0 = p.n < 16 ? p.n : 16, n1 = p.n - n0;
  const __mmask16 m0 = static_cast<__mmask16>((1u << n0) - 1);
  const __mmask16 m1 = static_cast<__mmask16>(n1 >= 16 ? 0xFFFFu : (1u << n1) - 1);
  if (p.accumulate) {
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      acc[i][0] = _mm512_maskz_loadu_ps(m0, p.out_f32 + i * p.ld_out);
      acc[i][1] = _mm512_maskz_loadu_ps(m1, p.out_f32 + i * p.ld_out + 16);
    }
  } else {
    const __m512 bias0 = _mm512_loadu_ps(p.bias), bias1 = _mm512_loadu_ps(p.bias + 16);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      acc[i][0] = bias0;
      acc[i][1] = bias1;
    }
  }
  const uint32_t* a = p.a_sliver;
  const uint16_t* b = p.b_panel;
  const int64_t a_stride = p.a_stride, b_stride = p.b_stride;
  for (int64_t kp = 0; kp < p.kp_count; ++kp, a += a_stride, b += b_stride) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + kNR);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  if (p.out_f32 != nullptr) {
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      float* row = p.out_f32 + i * p.ld_out;
      _mm512_mask_storeu_ps(row, m0, acc[i][0]);
      if (n1 > 0) _mm512_mask_storeu_ps(row + 16, m1, acc[i][1]);
    }
    return;
  }
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    uint16_t* row = p.out + i * p.ld_out;
    _mm256_mask_storeu_epi16(row, m0, (__m256i)_mm512_cvtneps_pbh(acc[i][0]));
    if (n1 > 0) _mm256_mask_storeu_epi16(row + 16, m1, (__m256i)_mm512_cvtneps_pbh(acc[i][1]));
  }
}

using ProductFn = void (*)(const PanelProduct&);
template <int... R>
constexpr ProductFn kByRows[] = {nullptr, &product_rows<R>...};
constexpr const ProductFn* kProducts = kByRows<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14>;
static_assert(kMR == 14, "one product per row count");

}  // namespace

void panel_product(const PanelProduct& p) { kProducts[p.rows](p); }

namespace {
void interleave_rows(const uint16_t* r0, const uint16_t* r1, int64_t n, uint16_t* dst) {
  alignas(64) static constexpr uint16_t kLo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                   37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                   11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                   53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                   27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_load_si512(kHi);
  for (int64_t j = 0; j < n; j += 32) {
    const int64_t left = n - j < 32 ? n - j : 32;
    const __mmask32 in = left == 32 ? ~__mmask32(0) : (__mmask32(1) << left) - 1;
    const __m512i a = _mm512_maskz_loadu_epi16(in, r0 + j);
    const __m512i b = r1 != nullptr ? _mm512_maskz_loadu_epi16(in, r1 + j) : _mm512_setzero_si512();
    const int64_t out_lo = 2 * left < 32 ? 2 * left : 32, out_hi = 2 * left - out_lo;
    const __mmask32 m_lo = out_lo == 32 ? ~__mmask32(0) : (__mmask32(1) << out_lo) - 1;
    const __mmask32 m_hi = out_hi == 32 ? ~__mmask32(0) : (__mmask32(1) << out_hi) - 1;
    _mm512_mask_storeu_epi16(dst + 2 * j, m_lo, _mm512_permutex2var_epi16(a, lo, b));
    if (out_hi > 0)
      _mm512_mask_storeu_epi16(dst + 2 * j + 32, m_hi, _mm512_permutex2var_epi16(a, hi, b));
  }
}

}  // namespace

void interleave_row_pairs(const uint16_t* src, int64_t ld, int64_t rows, int64_t n,
                          uint16_t* dst) {
  for (int64_t r = 0; r < rows; r += 2, src += 2 * ld, dst += 2 * n)
    interleave_rows(src, r + 1 < rows ? src + ld : nullptr, n, dst);
}

double dot_peak_gflops(int64_t iterations) {
  const int64_t threads = at::get_num_threads();
  std::atomic<float> sink{0.0f};
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      // Distinct starting values: identical chains would be merged into one by the compiler.
      __m512 acc[12];
      for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
      __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1, 1)
      for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], x, x);
        __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded
      }
      float total = 0.0f;
      for (auto& a : acc) total += _mm512_reduce_add_ps(a);
      sink.store(total, std::memory_order_relaxed);
    }
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return double(threads) * double(iterations) * 12.0 * 64.0 / seconds / 1e9;
}

}  // namespace cnnext::cpu::bf16

#pragma GCC pop_options

#else
namespace cnnext::cpu::bf16 {
// dot_available() is false here.
void panel_product(const PanelProduct&) { std::abort(); }
double dot_peak_gflops(int64_t) { return 0.0; }
void interleave_row_pairs(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*) {
  std::abort();
}
}  // namespace cnnext::cpu::bf16
#endif
