#pragma once
// The forward of bfloat16 grouped convolutions with 2, 4, 8 or 16 channels a group on
// channels_last tensors, with AVX512-BF16 pair dot products (grouped_conv2d_bf16_dot.cpp):
// float32 accumulation, one rounding to nearest even. Same geometry as grouped_conv2d_nhwc.h's
// forward; VDPBF16PS treats bfloat16 denormal inputs as zero.
#include <cstdint>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// The CPU has AVX512-BF16 (and CNNEXT_ISA allows it), groups of 2, 4, 8 or 16 channels in and
// out, at least 16 channels in all.
bool grouped_bf16_dot_applies(const Conv2dGeometry& g);

// in: NHWC bfloat16 bits; w: OIHW; bias: [C] or nullptr; out: NHWC, every element written.
void grouped_bf16_dot_forward(const uint16_t* in, const uint16_t* w, const uint16_t* bias,
                              uint16_t* out, const Conv2dGeometry& g, const Conv2dParams& p);

}  // namespace cnnext::cpu
