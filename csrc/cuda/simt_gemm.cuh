#pragma once
// A plain (CUDA-core) tiled GEMM over element loaders: the exact float32 path (TF32 off), the
// float64 path (gradcheck), and the split-K grad_weight GEMM. C[m][j] = sum_k A[m][k] B[k][j].
// A Problem supplies:
//   T, kAKFast / kBJFast    element type; which index consecutive threads walk when loading
//   m_size(), j_size()      GEMM sizes; k_range(z, &g, &k_begin, &k_end) the K slice of block z
//   a(g, m, k), b(g, k, j)  elements as acc_t<T>, zero outside the problem
//   store(z, g, m, j, acc)  the epilogue
#include "device_types.cuh"

namespace cnnext::cuda {

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

template <typename Problem>
__global__ void __launch_bounds__(kSimtThreads) simt_gemm_kernel(const Problem p) {
  using A = acc_t<typename Problem::T>;
  __shared__ A As[kSimtBK][kSimtBM + 1];
  __shared__ A Bs[kSimtBK][kSimtBN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.x) * kSimtBM;  // grid: x over M (may be large), y over J
  const int64_t j0 = int64_t(blockIdx.y) * kSimtBN;
  int64_t g, k_begin, k_end;
  p.k_range(blockIdx.z, &g, &k_begin, &k_end);
  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kSimtBK) {
    for (int e = tid; e < kSimtBK * kSimtBM; e += kSimtThreads) {
      const int kk = Problem::kAKFast ? e % kSimtBK : e / kSimtBM;
      const int r = Problem::kAKFast ? e / kSimtBK : e % kSimtBM;
      const int64_t k = k0 + kk, m = m0 + r;
      As[kk][r] = (k < k_end && m < p.m_size()) ? p.a(g, m, k) : A(0);
    }
    for (int e = tid; e < kSimtBK * kSimtBN; e += kSimtThreads) {
      const int kk = Problem::kBJFast ? e / kSimtBN : e % kSimtBK;
      const int c = Problem::kBJFast ? e % kSimtBN : e / kSimtBK;
      const int64_t k = k0 + kk, j = j0 + c;
      Bs[kk][c] = (k < k_end && j < p.j_size()) ? p.b(g, k, j) : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      A av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty + 16 * i, jj = j0 + tx + 16 * j;
      if (m < p.m_size() && jj < p.j_size()) p.store(blockIdx.z, g, m, jj, acc[i][j]);
    }
}

}  // namespace cnnext::cuda
