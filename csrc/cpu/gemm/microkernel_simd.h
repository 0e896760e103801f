#pragma once
// The SIMD micro-kernel body, shared by the AVX-512 and AVX2 translation units. Each includes
// this inside an anonymous namespace after its `#pragma GCC target`, with a vector-traits
// struct S providing: T, V, Mask, L (lanes), zero, set1, load, fmadd, mul, mask, maskz_load,
// mask_store. Nothing here may include a standard header (ODR: an inline function compiled for
// AVX-512 must never be chosen by the linker for the generic build).

// How many k rows ahead the kernel prefetches op(B) (matters when B is read in place).
constexpr int64_t kPrefetchRows = CNNEXT_PF_ROWS;

// MR accumulator rows of NV vectors each; MRP is the packed sliver height (stride of a per k).
template <class S, int MR, int MRP, int NV>
void simd_kernel(int64_t kc, const typename S::T* __restrict__ a,
                 const typename S::T* __restrict__ b, int64_t ldb, typename S::T* c, int64_t ldc,
                 typename S::T alpha, typename S::T beta, int64_t n) {
  using V = typename S::V;
  // The C tile is touched only at the end; start its (likely L2/L3) lines on the way now.
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NV * S::L - 1), _MM_HINT_T0);
  }
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = S::zero();

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      bv[v] = S::load(b + v * S::L);
      _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRows * ldb + v * S::L), _MM_HINT_T0);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = S::set1(a[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = S::fmadd(ai, bv[v], acc[i][v]);
    }
    a += MRP;
    b += ldb;
  }

  typename S::Mask masks[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) masks[v] = S::mask(n - v * S::L);
  const V va = S::set1(alpha);
  if (beta == typename S::T(0)) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        S::mask_store(c + i * ldc + v * S::L, masks[v], S::mul(acc[i][v], va));
  } else {
    const V vb = S::set1(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        typename S::T* p = c + i * ldc + v * S::L;
        const V old = S::maskz_load(masks[v], p);
        S::mask_store(p, masks[v], S::fmadd(old, vb, S::mul(acc[i][v], va)));
      }
  }
}

// rows[m] = simd_kernel<S, m, MRP, NV> for m = 1..MRP.
template <class S, int MRP, int NV, int M = MRP>
struct FillRows {
  static void fill(MicroKernel<typename S::T>* rows) {
    rows[M] = &simd_kernel<S, M, MRP, NV>;
    FillRows<S, MRP, NV, M - 1>::fill(rows);
  }
};
template <class S, int MRP, int NV>
struct FillRows<S, MRP, NV, 0> {
  static void fill(MicroKernel<typename S::T>*) {}
};
