#pragma once
// Plain descriptions of the CUDA conv2d problems and their launchers. No torch types: the
// binding (conv2d_binding.cpp) checks arguments with csrc/common/conv_shapes.h, lays tensors
// out, and fills these structs; the kernels (.cu) see only pointers and sizes.
#include <cuda_runtime.h>

#include <cstdint>

#include "device_types.cuh"

namespace cnnext::cuda {

// Forward and grad_input as one implicit GEMM: rows are pixels (n, y, x) of the result,
// columns are its channels within a group, and K runs over (kh, kw, c) taps of the source.
//   forward: source = input (NHWC), filter = weight as [G][Cout_g][KH][KW][Cin_g]
//   dgrad:   source = grad_output (NHWC), filter = weight as [G][Cin_g][KH][KW][Cout_g]
struct ImplicitGemmArgs {
  const void* src;       // NHWC contiguous [batch, src_h, src_w, src_c]
  int64_t src_h, src_w, src_c;
  const void* filter;    // [groups][gemm_n][kernel_h][kernel_w][k_c] contiguous
  const void* bias;      // forward only; [groups * gemm_n] or null
  void* out;             // element (n, ch, y, x) at n*out_sn + ch*out_sc + y*out_sh + x*out_sw
  int64_t out_sn, out_sc, out_sh, out_sw;
  int64_t batch, rows_h, rows_w;  // result pixels
  int64_t gemm_n;        // result channels per group
  int64_t k_c;           // source channels per group
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;
  bool dgrad;            // source pixel from result pixel: transposed (dgrad) or direct
};

// grad_weight as a split-K GEMM over the pixels of grad_output; partial sums per split go to
// a workspace and are added in split order (deterministic; no atomics).
struct WgradArgs {
  const void* grad_out;  // NHWC contiguous [batch, out_h, out_w, out_c]
  const void* input;     // NHWC contiguous [batch, in_h, in_w, in_c]
  void* workspace;       // acc_t [splits][groups][cout_g][kernel_h*kernel_w*cin_g]
  void* grad_weight;     // [groups*cout_g][kernel_h][kernel_w][cin_g] contiguous
  int64_t batch, in_h, in_w, in_c, out_h, out_w, out_c;
  int64_t groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t splits;
};

// Depthwise (one input channel per group) direct kernels; any strides.
struct DepthwiseArgs {
  const void* input;      int64_t in_sn, in_sc, in_sh, in_sw;
  const void* weight;     // [out_c][1][kernel_h][kernel_w] contiguous
  const void* bias;       // forward only, may be null
  const void* grad_out;   int64_t go_sn, go_sc, go_sh, go_sw;
  void* out;              // forward: output; dgrad: grad_input; wgrad: grad_weight (contiguous)
  int64_t batch, in_c, in_h, in_w, out_c, out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

struct BiasGradArgs {
  const void* grad_out;   int64_t go_sn, go_sc, go_sh, go_sw;
  void* grad_bias;
  int64_t batch, channels, h, w;
};

// Each returns cudaGetLastError() after its launches.
cudaError_t launch_conv_implicit_gemm(const ImplicitGemmArgs& a, DType dtype, bool allow_tf32,
                                      cudaStream_t stream);
cudaError_t launch_conv_wgrad(const WgradArgs& a, DType dtype, cudaStream_t stream);
int64_t wgrad_workspace_bytes(const WgradArgs& a, DType dtype);
cudaError_t launch_depthwise_forward(const DepthwiseArgs& a, DType dtype, cudaStream_t stream);
cudaError_t launch_depthwise_dgrad(const DepthwiseArgs& a, DType dtype, cudaStream_t stream);
cudaError_t launch_depthwise_wgrad(const DepthwiseArgs& a, DType dtype, cudaStream_t stream);
cudaError_t launch_bias_grad(const BiasGradArgs& a, DType dtype, cudaStream_t stream);

}  // namespace cnnext::cuda
