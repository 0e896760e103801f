#pragma once
// bfloat16 convolution on channels_last tensors with AVX512-BF16 pair dot products
// (gemm/bf16_dot.h): the forward as one product per group, rows = output pixels, columns =
// output channels, reduction = kh * kw * C_in runs of the input as it lies (an NHWC tap is a
// contiguous run of channels), float32 accumulation, one rounding to bfloat16.
#include <ATen/core/Tensor.h>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// Whether this path serves the forward of a bfloat16 problem here: the CPU has AVX512-BF16
// (and CNNEXT_ISA allows it), and the groups have at least 2 input and 8 output channels
// (depthwise and narrower groups go through float32).
bool bf16_nhwc_forward_applies(const Conv2dGeometry& g);

// input: NHWC-contiguous bfloat16; weight: OIHW-contiguous bfloat16; bias: bfloat16 or
// undefined; output: NHWC-contiguous bfloat16 of the output's shape, every element written.
void bf16_nhwc_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       at::Tensor& output, const Conv2dGeometry& g, const Conv2dParams& p);

// grad_input the same way, per stride phase of the input: rows = the phase's input pixels,
// reduction = the phase's taps * out channels of grad_output, columns = in channels. Applies
// where the forward does and the groups have at least 2 output channels to pair up.
bool bf16_nhwc_grad_input_applies(const Conv2dGeometry& g);

// grad_output: NHWC-contiguous bfloat16; weight: OIHW-contiguous; grad_input: NHWC-contiguous
// bfloat16 of the input's shape, every element written.
void bf16_nhwc_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                          at::Tensor& grad_input, const Conv2dGeometry& g, const Conv2dParams& p);

// grad_weight as a reduction over output pixels in pairs: per group, rows = out channels
// (grad_output's pixel rows interleaved in pairs), columns = kh * kw * in channels (the
// forward's gathered rows interleaved in pairs), accumulated in float32 over chunks of pixels
// in a fixed order (bit-identical for every thread count), rounded once. Applies where the
// forward does and a group's reduction rows are at least 16 wide.
bool bf16_nhwc_grad_weight_applies(const Conv2dGeometry& g);

// grad_output, input: NHWC-contiguous bfloat16; grad_weight: OIHW-contiguous bfloat16, every
// element written.
void bf16_nhwc_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                           at::Tensor& grad_weight, const Conv2dGeometry& g,
                           const Conv2dParams& p);

}  // namespace cnnext::cpu
