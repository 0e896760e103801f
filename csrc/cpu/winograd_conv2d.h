#pragma once
// Winograd F(4x4, 3x3) convolution for float32 3x3 stride-1 layers (Lavin & Gray, 2015).
//
// Each 4x4 block of outputs is computed from a 6x6 input patch with 36 multiplies per
// (input, output) channel pair instead of 144: the patch and the kernel are transformed
// (V = B^T d B, U = G g G^T), multiplied element-wise and summed over input channels (36
// independent GEMMs, the bulk of the work, run on our GEMM micro-kernels), then transformed
// back (Y = A^T M A). Float32 only: the transforms cost about 10x the rounding error of a
// direct sum (measured against float64: max abs error ~1.5e-5 on unit-scale outputs with 512
// input channels, vs ~1e-6 for im2col), well inside the float32 tolerance users get from
// torch's own algorithm choices (oneDNN and cuDNN pick Winograd / FFT too).
#include <cstdint>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// A dense 3x3, stride-1, ungrouped convolution (any dilation). Which of these run on Winograd
// rather than im2col is decided by winograd_preferred (CNNEXT_CONV_ALGO overrides it).
bool winograd_applies(const Conv2dGeometry& g, const Conv2dParams& p);

// Shapes where the transforms pay off (measured on the benchmark suite's layers).
bool winograd_preferred(const Conv2dGeometry& g, const Conv2dParams& p);

// out[n, o] = bias[o] + sum_c correlate(in[n, c], w[o, c]) with zero padding (pad_h, pad_w)
// and dilation (dil_h, dil_w): in is [batch][in_channels][in_h][in_w], out
// [batch][out_channels][out_h][out_w] (out_h = in_h + 2 pad_h - 2 dil_h), both contiguous.
// bias may be null.
// With flipped_transposed_weight, w is read as the weight of the transposed convolution: w is
// [in_channels][out_channels][3][3] and tap (ky, kx) of (o, c) is w[c][o][2 - ky][2 - kx].
// That makes this also the grad_input of a 3x3 stride-1 convolution (pad 2 dil - p).
struct WinogradProblem {
  int64_t batch, in_channels, in_h, in_w, out_channels, out_h, out_w, pad_h, pad_w, dil_h, dil_w;
  bool flipped_transposed_weight;
};
void winograd_conv2d_3x3(const WinogradProblem& prob, const float* in, const float* w,
                         const float* bias, float* out);

}  // namespace cnnext::cpu
