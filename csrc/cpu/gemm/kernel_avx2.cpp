// AVX2+FMA micro-kernels (float: 6x16, double: 6x8 accumulators in 12 ymm registers).
// Compiled for AVX2 via a target pragma; called only when the CPU reports avx2 and fma.
#include "microkernel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace cnnext::cpu::gemm_detail {
namespace {

struct F32x8 {
  using T = float;
  using V = __m256;
  using Mask = __m256i;
  static constexpr int L = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static Mask mask(int64_t n) {
    const int k = n >= L ? L : n <= 0 ? 0 : static_cast<int>(n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V maskz_load(Mask m, const T* p) { return _mm256_maskload_ps(p, m); }
  static void mask_store(T* p, Mask m, V v) { _mm256_maskstore_ps(p, m, v); }
};

struct F64x4 {
  using T = double;
  using V = __m256d;
  using Mask = __m256i;
  static constexpr int L = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static Mask mask(int64_t n) {
    const long long k = n >= L ? L : n <= 0 ? 0 : n;
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(k), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V maskz_load(Mask m, const T* p) { return _mm256_maskload_pd(p, m); }
  static void mask_store(T* p, Mask m, V v) { _mm256_maskstore_pd(p, m, v); }
};

#ifndef CNNEXT_PF_ROWS
#define CNNEXT_PF_ROWS 8
#endif
#include "microkernel_simd.h"

constexpr int kMR = 6;

template <class S>
KernelSet<typename S::T> make_set(int64_t kc, int64_t nc, int64_t mc) {
  KernelSet<typename S::T> ks{};
  ks.mr = kMR;
  ks.nr = 2 * S::L;
  ks.kc = kc;
  ks.nc = nc;
  ks.mc = mc;
  FillRows<S, kMR, 2>::fill(ks);
  ks.dot = &simd_dot<S>;
  ks.dot_rows = &simd_dot_rows<S>;
  return ks;
}

}  // namespace

const KernelSet<float>& avx2_kernels_f32() {
  static const KernelSet<float> ks = make_set<F32x8>(/*kc=*/256, /*nc=*/1024, /*mc=*/96 * kMR);
  return ks;
}
const KernelSet<double>& avx2_kernels_f64() {
  static const KernelSet<double> ks = make_set<F64x4>(/*kc=*/256, /*nc=*/512, /*mc=*/96 * kMR);
  return ks;
}

}  // namespace cnnext::cpu::gemm_detail

#pragma GCC pop_options

#else  // not x86-64 GCC/Clang: never selected (best_supported_isa() is Portable there)
namespace cnnext::cpu::gemm_detail {
const KernelSet<float>& avx2_kernels_f32() { return portable_kernels_f32(); }
const KernelSet<double>& avx2_kernels_f64() { return portable_kernels_f64(); }
}  // namespace cnnext::cpu::gemm_detail
#endif
