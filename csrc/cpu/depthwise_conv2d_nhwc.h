#pragma once
// Depthwise convolution (groups == C_in == C_out) on channels_last (NHWC) tensors as they lie:
// vectors run across channels (16 float32 lanes on AVX-512), so every map size fills them, and
// a window's taps are whole-vector loads at fixed offsets. No layout copies: input, output,
// grad_output and grad_input are all NHWC; the weight is [C][1][kh][kw].
#include <c10/util/BFloat16.h>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// One output channel per input channel (no channel multiplier: with one, an output vector
// would read each input channel several times over, a gather).
inline bool depthwise_nhwc_applies(const Conv2dGeometry& g) {
  return g.groups > 1 && g.in_channels == g.groups && g.out_channels == g.groups;
}

template <typename T>
void depthwise_nhwc_forward(const T* in, const T* w, const T* bias, T* out,
                            const Conv2dGeometry& g, const Conv2dParams& p);

// bfloat16 input, weight, bias (null: none) and output, float32 arithmetic, each output
// rounded once to nearest even.
void depthwise_nhwc_forward_bf16(const c10::BFloat16* in, const c10::BFloat16* w,
                                 const c10::BFloat16* bias, c10::BFloat16* out,
                                 const Conv2dGeometry& g, const Conv2dParams& p);

// Any of grad_input / grad_weight / grad_bias may be null (not requested). grad_weight and
// grad_bias are written, summed over the batch in image order: bit-identical run to run and
// for any thread count.
template <typename T>
void depthwise_nhwc_backward(const T* grad_output, const T* in, const T* w, T* grad_input,
                             T* grad_weight, T* grad_bias, const Conv2dGeometry& g,
                             const Conv2dParams& p);

}  // namespace cnnext::cpu
