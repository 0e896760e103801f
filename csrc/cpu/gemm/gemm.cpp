// Cache-blocked GEMM driver. Each thread owns whole tiles of C (no shared writes), packs the
// panels of op(A) and op(B) it needs, and sweeps K in a fixed order: deterministic results.
#include "gemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

namespace cnnext::cpu {
namespace {

constexpr int64_t kMC = 64;   // rows of C per tile
constexpr int64_t kNC = 256;  // columns of C per tile
constexpr int64_t kKC = 256;  // depth of one packed panel

template <typename T>
inline T elem(const T* X, int64_t ld, bool trans, int64_t r, int64_t c) {
  return trans ? X[c * ld + r] : X[r * ld + c];
}

template <typename T>
void gemm_blocked(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const int64_t tiles_m = (M + kMC - 1) / kMC;
  const int64_t tiles_n = (N + kNC - 1) / kNC;
  at::parallel_for(0, tiles_m * tiles_n, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> a_pack(kMC * kKC), b_pack(kKC * kNC), acc(kMC * kNC);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = (t / tiles_n) * kMC, j0 = (t % tiles_n) * kNC;
      const int64_t mb = std::min(kMC, M - i0), nb = std::min(kNC, N - j0);
      std::fill(acc.begin(), acc.begin() + mb * kNC, T(0));
      for (int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int64_t kb = std::min(kKC, K - k0);
        for (int64_t i = 0; i < mb; ++i)
          for (int64_t k = 0; k < kb; ++k)
            a_pack[i * kKC + k] = elem(A, lda, trans_a, i0 + i, k0 + k);
        for (int64_t k = 0; k < kb; ++k)
          for (int64_t j = 0; j < nb; ++j)
            b_pack[k * kNC + j] = elem(B, ldb, trans_b, k0 + k, j0 + j);
        for (int64_t i = 0; i < mb; ++i) {
          T* __restrict__ row = acc.data() + i * kNC;
          for (int64_t k = 0; k < kb; ++k) {
            const T a = a_pack[i * kKC + k];
            const T* __restrict__ brow = b_pack.data() + k * kNC;
            for (int64_t j = 0; j < nb; ++j) row[j] += a * brow[j];
          }
        }
      }
      for (int64_t i = 0; i < mb; ++i) {
        T* crow = C + (i0 + i) * ldc + j0;
        const T* arow = acc.data() + i * kNC;
        if (beta == T(0)) {
          for (int64_t j = 0; j < nb; ++j) crow[j] = alpha * arow[j];
        } else {
          for (int64_t j = 0; j < nb; ++j) crow[j] = alpha * arow[j] + beta * crow[j];
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void gemm_isa(Isa isa, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
              const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  (void)isa;  // one portable path for now; ISA micro-kernels plug in here
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  gemm_blocked(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_isa(active_isa(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#define CNNEXT_INSTANTIATE_GEMM(T)                                                            \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t);                                              \
  template void gemm_isa<T>(Isa, bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,  \
                            const T*, int64_t, T, T*, int64_t);
CNNEXT_INSTANTIATE_GEMM(float)
CNNEXT_INSTANTIATE_GEMM(double)
#undef CNNEXT_INSTANTIATE_GEMM

}  // namespace cnnext::cpu
