#pragma once
// Host-side helpers for the CUDA bindings: torch dtype -> kernel tag, device/stream, launch
// checks. Only light c10/cuda headers (no ATen/cuda/CUDAContext.h, which pulls in cuBLAS), so
// the bindings compile against a CPU torch wheel in the CI compile check.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/types.h>

#include "device_types.cuh"

namespace cnnext::cuda {

inline DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat;
    case at::kDouble: return DType::kDouble;
    case at::kHalf: return DType::kHalf;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "cnnext.", op, ": dtype ", t.scalar_type(),
                  " is not supported on CUDA (float16, bfloat16, float32 and float64 are)");
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "cnnext.", op, ": CUDA kernel launch failed: ",
              cudaGetErrorString(err));
}

// The current stream of the tensor's device (at::cuda::getCurrentCUDAStream is this function).
inline cudaStream_t stream_for(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

}  // namespace cnnext::cuda
