#pragma once
// Plain descriptions of the CUDA pooling problems and their launchers (no torch types).
// input, output, indices, grad_output and grad_input all share one layout: NCHW contiguous or
// channels_last contiguous (the input's suggested memory format; the binding arranges it).
#include <cuda_runtime.h>

#include <cstdint>

#include "device_types.cuh"

namespace cnnext::cuda {

struct PoolGeometry {
  int64_t batch, channels, in_h, in_w, out_h, out_w;
  // Window rules; unused by the adaptive ops (their windows follow from the sizes).
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool channels_last;
};

struct AvgPoolRule {
  bool count_include_pad;
  int64_t divisor_override;  // 0: none
};

// Max pooling: indices are int64, flat h * in_w + w per (n, c) plane.
cudaError_t launch_max_pool_forward(const void* in, void* out, int64_t* indices,
                                    const PoolGeometry& g, bool adaptive, DType d, cudaStream_t s);
// Deterministic gather: each input element sums the outputs whose index names it.
cudaError_t launch_max_pool_backward(const void* grad_out, const int64_t* indices, void* grad_in,
                                     const PoolGeometry& g, bool adaptive, DType d,
                                     cudaStream_t s);
cudaError_t launch_avg_pool_forward(const void* in, void* out, const PoolGeometry& g,
                                    const AvgPoolRule& r, DType d, cudaStream_t s);
cudaError_t launch_avg_pool_backward(const void* grad_out, void* grad_in, const PoolGeometry& g,
                                     const AvgPoolRule& r, DType d, cudaStream_t s);
cudaError_t launch_adaptive_avg_pool_forward(const void* in, void* out, const PoolGeometry& g,
                                             DType d, cudaStream_t s);
cudaError_t launch_adaptive_avg_pool_backward(const void* grad_out, void* grad_in,
                                              const PoolGeometry& g, DType d, cudaStream_t s);

}  // namespace cnnext::cuda
