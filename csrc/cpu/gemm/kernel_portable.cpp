// Portable micro-kernels (plain C++; the compiler vectorises for the baseline ISA). Used on
// CPUs without AVX2+FMA and as the reference path the tests compare the SIMD kernels against.
#include "microkernel.h"

namespace cnnext::cpu::gemm_detail {
namespace {

// a_at(k, i) gives element (k, i) of the A tile, row(k) where row k of b starts (see the
// MicroKernel / OffsetMicroKernel / DirectAMicroKernel contracts).
template <typename T, int MR, int NR, class AAt, class RowAt>
void portable_tile(int64_t kc, const AAt& a_at, const RowAt& row, T* c, int64_t ldc, T alpha,
                   T beta, int64_t n) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* __restrict__ b = row(k);
    for (int i = 0; i < MR; ++i) {
      const T ai = a_at(k, i);
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
  }
  const int64_t cols = n < NR ? n : NR;
  for (int i = 0; i < MR; ++i) {
    T* row = c + i * ldc;
    if (beta == T(0)) {
      for (int64_t j = 0; j < cols; ++j) row[j] = acc[i][j] * alpha;
    } else {
      for (int64_t j = 0; j < cols; ++j) row[j] = row[j] * beta + acc[i][j] * alpha;
    }
  }
}

template <typename T, int MR, int MRP, int NR>
void portable_kernel(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, int64_t ldc,
                     T alpha, T beta, int64_t n) {
  portable_tile<T, MR, NR>(kc, [=](int64_t k, int i) { return a[k * MRP + i]; },
                           [=](int64_t k) { return b + k * ldb; }, c, ldc, alpha, beta, n);
}

template <typename T, int MR, int NR>
void portable_direct_a_kernel(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                              int64_t ldc, T alpha, T beta, int64_t n) {
  portable_tile<T, MR, NR>(kc, [=](int64_t k, int i) { return a[i * lda + k]; },
                           [=](int64_t k) { return b + k * ldb; }, c, ldc, alpha, beta, n);
}

template <typename T, int MR, int MRP, int NR>
void portable_offset_kernel(int64_t kc, const T* a, const T* b, const int64_t* b_offset, T* c,
                            int64_t ldc, T alpha, T beta, int64_t n) {
  portable_tile<T, MR, NR>(kc, [=](int64_t k, int i) { return a[k * MRP + i]; },
                           [=](int64_t k) { return b + b_offset[k]; }, c, ldc, alpha, beta, n);
}

template <typename T, int MRP, int NR, int M = MRP>
struct FillRows {
  static void fill(KernelSet<T>& ks) {
    ks.rows[M] = &portable_kernel<T, M, MRP, NR>;
    ks.offset_rows[M] = &portable_offset_kernel<T, M, MRP, NR>;
    ks.direct_a_rows[M] = &portable_direct_a_kernel<T, M, NR>;
    FillRows<T, MRP, NR, M - 1>::fill(ks);
  }
};
template <typename T, int MRP, int NR>
struct FillRows<T, MRP, NR, 0> {
  static void fill(KernelSet<T>&) {}
};

template <typename T, int MR, int NR>
KernelSet<T> make_set() {
  KernelSet<T> ks{};
  ks.mr = MR;
  ks.nr = NR;
  ks.kc = 256;
  ks.nc = 1024;
  ks.mc = 64 * MR;
  FillRows<T, MR, NR>::fill(ks);
  return ks;
}

}  // namespace

const KernelSet<float>& portable_kernels_f32() {
  static const KernelSet<float> ks = make_set<float, 4, 8>();
  return ks;
}
const KernelSet<double>& portable_kernels_f64() {
  static const KernelSet<double> ks = make_set<double, 4, 4>();
  return ks;
}

}  // namespace cnnext::cpu::gemm_detail
