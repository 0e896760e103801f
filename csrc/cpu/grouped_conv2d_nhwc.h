#pragma once
// Grouped convolution with few channels per group (ResNeXt's 4 and 8, RegNet's 8) on
// channels_last tensors as they lie: vectors run across output channels, so one vector holds
// several groups' outputs; each multiply-add takes the input channel of its own group, moved
// into place by one in-register permute. A GEMM per group would be 8 columns wide with a
// 72-long reduction; torch ran these at 70-250 GFLOP/s here against 450 for dense layers.
#include <c10/util/BFloat16.h>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// Groups of k in and k out channels, k in {2, 4, 8} and fewer than a vector's lanes on the
// active ISA (16 float32 lanes on AVX-512: up to 8; AVX2: 4; SSE2: 2), so each vector holds
// whole groups; at least 16 channels in all (the last vector overlaps the one before instead of
// masking). A group as wide as the vector would take a broadcast per multiply-add, which ran
// 4x slower than torch (16 channels a group, 512 in all, at 14x14); GEMM rows take those.
bool grouped_nhwc_applies(const Conv2dGeometry& g, bool float64);

template <typename T>
void grouped_nhwc_forward(const T* in, const T* w, const T* bias, T* out,
                          const Conv2dGeometry& g, const Conv2dParams& p);

// The same on bfloat16 tensors, where grouped_nhwc_applies(g, false) or
// grouped_bf16_dot_applies(g) (groups of 16 too) holds: with AVX512-BF16 pair dot products
// (grouped_conv2d_bf16_dot.h), elsewhere float32 lanes (inputs widened, weights exact in
// float32); each output rounded once to bfloat16. The grad_input below takes the same two
// ways; the grad_weight too, for groups of up to 8.
void grouped_nhwc_forward_bf16(const c10::BFloat16* in, const c10::BFloat16* w,
                               const c10::BFloat16* bias, c10::BFloat16* out,
                               const Conv2dGeometry& g, const Conv2dParams& p);

// grad_input where the forward applies: the forward of the transposed problem (each group's
// kernel flipped and transposed) where grouped_grad_input_is_transposed_forward() holds (stride
// 1, (k - 1) * dilation >= padding on both axes); otherwise a gather per input pixel over the
// taps that reach it. grad_output: NHWC-contiguous; grad_input: NHWC-contiguous of the input's
// shape, every element written.
bool grouped_grad_input_is_transposed_forward(const Conv2dGeometry& g, const Conv2dParams& p);

template <typename T>
void grouped_nhwc_grad_input(const T* grad_output, const T* w, T* grad_input,
                             const Conv2dGeometry& g, const Conv2dParams& p);
void grouped_nhwc_grad_input_bf16(const c10::BFloat16* grad_output, const c10::BFloat16* w,
                                  c10::BFloat16* grad_input, const Conv2dGeometry& g,
                                  const Conv2dParams& p);

// grad_weight of a bfloat16 layer where grouped_nhwc_applies(g, false): float32 sums (or pair dot
// products over pairs of output pixels) over fixed chunks of output rows (the same bits for
// every thread count), added in chunk order, rounded once.
// grad_output and input: NHWC-contiguous; grad_weight: OIHW-contiguous, every element written.
void grouped_nhwc_grad_weight_bf16(const c10::BFloat16* grad_output, const c10::BFloat16* in,
                                   c10::BFloat16* grad_weight, const Conv2dGeometry& g,
                                   const Conv2dParams& p);

}  // namespace cnnext::cpu
