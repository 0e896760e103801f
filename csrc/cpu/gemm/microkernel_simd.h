#pragma once
// The SIMD micro-kernel body, shared by the AVX-512 and AVX2 translation units. Each includes
// this inside an anonymous namespace after its `#pragma GCC target`, with a vector-traits
// struct S providing: T, V, Mask, L (lanes), zero, set1, load, fmadd, mul, mask, maskz_load,
// mask_store. Nothing here may include a standard header (ODR: an inline function compiled for
// AVX-512 must never be chosen by the linker for the generic build).

// How many k rows ahead the kernel prefetches op(B) (matters when B is read in place).
constexpr int64_t kPrefetchRows = CNNEXT_PF_ROWS;

// Where row k of b starts: k*ldb along a packed or in-place operand, prefetched a few rows
// ahead (the hardware prefetcher misses in-place rows far apart) ...
template <typename T>
struct StridedRows {
  const T* b;
  int64_t ldb;
  static constexpr bool kPrefetch = kPrefetchRows > 0;
  const T* row(int64_t k) const { return b + k * ldb; }
  const T* ahead(int64_t k) const { return row(k + kPrefetchRows); }
};
// ... or at a listed offset (an implicit im2col over a padded image). Its rows are as many
// streams as taps, too many for the hardware prefetcher: ask for the same row of the next tile
// (the caller walks the tiles of a sliver left to right).
template <typename T, int NR>
struct OffsetRows {
  const T* b;
  const int64_t* offset;
  static constexpr bool kPrefetch = true;
  const T* row(int64_t k) const { return b + offset[k]; }
  const T* ahead(int64_t k) const { return row(k) + NR; }
};

// Where element (k, i) of the A tile lies: in a packed sliver MRP rows high (k*MRP + i) ...
template <typename T, int MRP>
struct PackedA {
  const T* a;
  T at(int64_t k, int i) const { return a[k * MRP + i]; }
};
// ... or in A's own rows, lda apart (i*lda + k): op(A) = A read in place, only the tile's rows.
template <typename T>
struct InPlaceA {
  const T* a;
  int64_t lda;
  T at(int64_t k, int i) const { return a[i * lda + k]; }
};

// MR accumulator rows of NV vectors each; ARows / BRows say where the operands' elements lie.
// Each C element is the same FMA chain over k whatever the addressing.
template <class S, int MR, int NV, class ARows, class BRows>
void simd_tile(int64_t kc, const ARows a, const BRows rows, typename S::T* c, int64_t ldc,
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
    const typename S::T* b = rows.row(k);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      bv[v] = S::load(b + v * S::L);
      if constexpr (BRows::kPrefetch)
        _mm_prefetch(reinterpret_cast<const char*>(rows.ahead(k) + v * S::L), _MM_HINT_T0);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = S::set1(a.at(k, i));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = S::fmadd(ai, bv[v], acc[i][v]);
    }
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

template <class S, int MR, int MRP, int NV>
void simd_kernel(int64_t kc, const typename S::T* a, const typename S::T* b, int64_t ldb,
                 typename S::T* c, int64_t ldc, typename S::T alpha, typename S::T beta,
                 int64_t n) {
  using T = typename S::T;
  simd_tile<S, MR, NV>(kc, PackedA<T, MRP>{a}, StridedRows<T>{b, ldb}, c, ldc, alpha, beta, n);
}

template <class S, int MR, int NV>
void simd_direct_a_kernel(int64_t kc, const typename S::T* a, int64_t lda,
                          const typename S::T* b, int64_t ldb, typename S::T* c, int64_t ldc,
                          typename S::T alpha, typename S::T beta, int64_t n) {
  using T = typename S::T;
  simd_tile<S, MR, NV>(kc, InPlaceA<T>{a, lda}, StridedRows<T>{b, ldb}, c, ldc, alpha, beta, n);
}

template <class S, int MR, int MRP, int NV>
void simd_offset_kernel(int64_t kc, const typename S::T* a, const typename S::T* b,
                        const int64_t* b_offset, typename S::T* c, int64_t ldc,
                        typename S::T alpha, typename S::T beta, int64_t n) {
  using T = typename S::T;
  simd_tile<S, MR, NV>(kc, PackedA<T, MRP>{a}, OffsetRows<T, NV * S::L>{b, b_offset}, c, ldc,
                       alpha, beta, n);
}

// See DotRowsKernel (microkernel.h). Rows past m (columns past n) repeat row 0 (column 0):
// computed but never stored, so no read leaves the operands.
template <class S>
void simd_dot_rows(int64_t K, const typename S::T* const* a_rows,
                   const typename S::T* const* b_rows, typename S::T* c, int64_t ldc,
                   typename S::T alpha, typename S::T beta, int64_t m, int64_t n) {
  using T = typename S::T;
  using V = typename S::V;
  constexpr int D = kDotTile;
  const T* ar[D];
  const T* br[D];
#pragma GCC unroll 8
  for (int i = 0; i < D; ++i) {
    ar[i] = a_rows[i < m ? i : 0];
    br[i] = b_rows[i < n ? i : 0];
  }
  V acc[D][D];
#pragma GCC unroll 8
  for (int i = 0; i < D; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < D; ++j) acc[i][j] = S::zero();
  int64_t k = 0;
  for (; k + S::L <= K; k += S::L) {
    V av[D], bv[D];
#pragma GCC unroll 8
    for (int i = 0; i < D; ++i) {
      av[i] = S::load(ar[i] + k);
      bv[i] = S::load(br[i] + k);
    }
#pragma GCC unroll 8
    for (int i = 0; i < D; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < D; ++j) acc[i][j] = S::fmadd(av[i], bv[j], acc[i][j]);
  }
  if (k < K) {
    const typename S::Mask tail = S::mask(K - k);
    V av[D], bv[D];
#pragma GCC unroll 8
    for (int i = 0; i < D; ++i) {
      av[i] = S::maskz_load(tail, ar[i] + k);
      bv[i] = S::maskz_load(tail, br[i] + k);
    }
#pragma GCC unroll 8
    for (int i = 0; i < D; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < D; ++j) acc[i][j] = S::fmadd(av[i], bv[j], acc[i][j]);
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T lanes[S::L];
      S::store(lanes, acc[i][j]);
      T sum = T(0);
      for (int l = 0; l < S::L; ++l) sum += lanes[l];
      T* out = c + i * ldc + j;
      *out = beta == T(0) ? alpha * sum : *out * beta + alpha * sum;
    }
}

// See DotKernel (microkernel.h).
template <class S>
void simd_dot(int64_t K, const typename S::T* a, int64_t lda, const typename S::T* b,
              int64_t ldb, typename S::T* c, int64_t ldc, typename S::T alpha,
              typename S::T beta, int64_t m, int64_t n) {
  const typename S::T* ar[kDotTile];
  const typename S::T* br[kDotTile];
  for (int i = 0; i < kDotTile; ++i) {
    ar[i] = a + (i < m ? i : 0) * lda;
    br[i] = b + (i < n ? i : 0) * ldb;
  }
  simd_dot_rows<S>(K, ar, br, c, ldc, alpha, beta, m, n);
}

// rows[m] = simd_kernel<S, m, MRP, NV>, offset_rows[m] = simd_offset_kernel<...> and
// direct_a_rows[m] = simd_direct_a_kernel<...> for m = 1..MRP.
template <class S, int MRP, int NV, int M = MRP>
struct FillRows {
  static void fill(KernelSet<typename S::T>& ks) {
    ks.rows[M] = &simd_kernel<S, M, MRP, NV>;
    ks.offset_rows[M] = &simd_offset_kernel<S, M, MRP, NV>;
    ks.direct_a_rows[M] = &simd_direct_a_kernel<S, M, NV>;
    FillRows<S, MRP, NV, M - 1>::fill(ks);
  }
};
template <class S, int MRP, int NV>
struct FillRows<S, MRP, NV, 0> {
  static void fill(KernelSet<typename S::T>&) {}
};
