// AVX-512 micro-kernels (float: 14x32, double: 14x16 accumulators in 28 zmm registers).
// Compiled for AVX-512 via a target pragma so the package itself needs no -march flag; the
// driver only calls these when the CPU reports avx512f.
#include "microkernel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")

namespace cnnext::cpu::gemm_detail {
namespace {

struct F32x16 {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int L = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(T x) { return _mm512_set1_ps(x); }
  static V load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static Mask mask(int64_t n) { return n >= L ? Mask(0xFFFF) : n <= 0 ? Mask(0) : Mask((1u << n) - 1); }
  static V maskz_load(Mask m, const T* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void mask_store(T* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
};

struct F64x8 {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int L = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(T x) { return _mm512_set1_pd(x); }
  static V load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static Mask mask(int64_t n) { return n >= L ? Mask(0xFF) : n <= 0 ? Mask(0) : Mask((1u << n) - 1); }
  static V maskz_load(Mask m, const T* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void mask_store(T* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
};

#ifndef CNNEXT_PF_ROWS
#define CNNEXT_PF_ROWS 8
#endif
#include "microkernel_simd.h"

#ifndef CNNEXT_AVX512_MR
#define CNNEXT_AVX512_MR 14
#endif
constexpr int kMR = CNNEXT_AVX512_MR;
#ifndef CNNEXT_AVX512_NV
#define CNNEXT_AVX512_NV 2
#endif
constexpr int kNV = CNNEXT_AVX512_NV;

#include "transpose16_avx512.h"

// pack_a for op(A) = A in 16 x 16 register transposes instead of one scalar move per element
// (the scalar pack took 13% of a 512^2 product).
void pack_a_rows_f32(const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  static_assert(kMR <= 16, "one transposed column holds a whole sliver");
  const __mmask16 sliver = static_cast<__mmask16>((1u << kMR) - 1);
  for (int64_t s = 0; s < mc; s += kMR) {
    const int64_t rows = mc - s < kMR ? mc - s : kMR;
    float* d = dst + s * kc;
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int64_t kk = kc - k0 < 16 ? kc - k0 : 16;
      __m512 r[16];
      load_transposed(A + s * lda + k0, lda, rows, kk, r);
      for (int64_t j = 0; j < kk; ++j) _mm512_mask_storeu_ps(d + (k0 + j) * kMR, sliver, r[j]);
    }
  }
}

// pack_b for op(B) = B^T (the grad_weight products), likewise: each 32-column sliver is two
// 16 x 16 transposes per 16 k.
void pack_b_cols_f32(const float* B, int64_t ldb, int64_t kc, int64_t nc, float* dst) {
  constexpr int64_t kNR = kNV * 16;
  static_assert(kNR % 16 == 0, "slivers of whole 16-column halves");
  for (int64_t c0 = 0; c0 < nc; c0 += kNR) {
    float* d = dst + (c0 / kNR) * kc * kNR;
    for (int64_t h = 0; h < kNR; h += 16) {
      const int64_t valid = nc - c0 - h;  // columns of this half that exist (may be <= 0)
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const int64_t kk = kc - k0 < 16 ? kc - k0 : 16;
        __m512 r[16];
        // No row of a half past nc is read (nor pointed at).
        load_transposed(valid > 0 ? B + (c0 + h) * ldb + k0 : B, ldb, valid, kk, r);
        for (int64_t t = 0; t < kk; ++t) _mm512_storeu_ps(d + (k0 + t) * kNR + h, r[t]);
      }
    }
  }
}

template <class S>
KernelSet<typename S::T> make_set(int64_t kc, int64_t nc, int64_t mc) {
  KernelSet<typename S::T> ks{};
  ks.mr = kMR;
  ks.nr = kNV * S::L;
  ks.kc = kc;
  ks.nc = nc;
  ks.mc = mc;
  FillRows<S, kMR, kNV>::fill(ks);
  ks.dot = &simd_dot<S>;
  ks.dot_rows = &simd_dot_rows<S>;
  return ks;
}

KernelSet<float> make_f32_set() {
  KernelSet<float> ks = make_set<F32x16>(/*kc=*/256, /*nc=*/1024, /*mc=*/40 * kMR);
  ks.pack_a_rows = &pack_a_rows_f32;
  ks.pack_b_cols = &pack_b_cols_f32;
  return ks;
}

}  // namespace

const KernelSet<float>& avx512_kernels_f32() {
  static const KernelSet<float> ks = make_f32_set();
  return ks;
}
const KernelSet<double>& avx512_kernels_f64() {
  static const KernelSet<double> ks = make_set<F64x8>(/*kc=*/192, /*nc=*/512, /*mc=*/40 * kMR);
  return ks;
}

}  // namespace cnnext::cpu::gemm_detail

#pragma GCC pop_options

#else  // not x86-64 GCC/Clang: never selected (best_supported_isa() is Portable there)
namespace cnnext::cpu::gemm_detail {
const KernelSet<float>& avx512_kernels_f32() { return portable_kernels_f32(); }
const KernelSet<double>& avx512_kernels_f64() { return portable_kernels_f64(); }
}  // namespace cnnext::cpu::gemm_detail
#endif
