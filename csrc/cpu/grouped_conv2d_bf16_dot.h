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

// grad_input of any stride, gathered per input pixel over the taps that reach it;
// w_transposed: OIHW with each group's kernel transposed (w'[G * K + i][o] = w[G * K + o][i]).
void grouped_bf16_dot_grad_input(const uint16_t* grad_output, const uint16_t* w_transposed,
                                 uint16_t* grad_input, const Conv2dGeometry& g,
                                 const Conv2dParams& p);

// grad_weight of one task with pair dot products over pairs of output pixels: output rows
// [row0, row1), channel vector at c0 (16 channels, groups of K = 2, 4 or 8), sums added to
// acc ([taps][K][16] float32, the rotated layout of grouped_conv2d_nhwc_kernels.inc's
// grad_weight: lane l = G * K + i of rotation r sums the weight from input i to output
// (i + r) % K). scratch: room for ceil(out_w / 2) * K * 16 uint32. Applies where
// grouped_bf16_dot_applies() holds and K <= 8 (16 a group ran 2-6x slower than the GEMM
// rows of conv2d_bf16_nhwc.h: 16 rotations per pixel pair, one tap at a time).
struct GroupedDotGradJob {
  int64_t C, H, W, OH, OW, K, kh, kw, sh, sw, ph, pw, dh, dw;
  const uint16_t* grad_output;  // NHWC bfloat16 bits
  const uint16_t* in;           // NHWC bfloat16 bits
  const uint16_t* zeros;        // [C]
};
void grouped_bf16_dot_grad_weight_task(const GroupedDotGradJob& J, int64_t row0, int64_t row1,
                                       int64_t c0, float* acc, uint32_t* scratch);

}  // namespace cnnext::cpu
