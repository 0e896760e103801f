#pragma once
// Deterministic block sum: a fixed tree over a fixed block size, so the result does not depend
// on scheduling (no atomics).
namespace cnnext::cuda {

template <int kThreads, typename A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (int(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  const A total = partial[0];
  __syncthreads();  // partial may be reused by the caller's next call
  return total;
}

}  // namespace cnnext::cuda
