#pragma once
// Element-type helpers shared by every CUDA kernel. CUDA headers only (no torch): the kernels
// compile in CI against a CPU torch wheel, so torch types stay in the *_binding.cpp files.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cnnext::cuda {

// Accumulator type: float for 16-bit and 32-bit inputs, double for double.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> __device__ __forceinline__ acc_t<T> to_acc(T v) { return static_cast<acc_t<T>>(v); }
template <> __device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T> __device__ __forceinline__ T zero_value() { return from_acc<T>(acc_t<T>(0)); }

// -inf in the accumulator type (max pooling's starting value).
template <typename T> __device__ __forceinline__ acc_t<T> neg_inf() { return -INFINITY; }
template <> __device__ __forceinline__ double neg_inf<double>() { return -HUGE_VAL; }

template <typename A> __device__ __forceinline__ bool is_nan(A v) { return v != v; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n elements: capped so the grid stays legal; every kernel
// that uses it loops, so any n is covered.
inline unsigned int grid_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  const int64_t cap = int64_t(1) << 20;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Element type tag passed from the binding (which knows torch's ScalarType) to the launchers.
enum class DType { kFloat, kDouble, kHalf, kBFloat16 };

}  // namespace cnnext::cuda
