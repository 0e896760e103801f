#pragma once
// Direct convolution for layers where each output channel reads exactly one input channel
// (C_in / groups == 1): depthwise convs (groups == C_in, any channel multiplier) and
// single-channel first layers (C_in == 1). A GEMM there would have K = kh*kw, far too thin;
// the direct loops read each input plane once and are bandwidth-bound instead.
#include "../common/conv_shapes.h"

namespace cnnext::cpu {

inline bool depthwise_applies(const Conv2dGeometry& g) {
  return g.in_channels_per_group() == 1 && g.in_channels == g.groups;
}

// out[n, oc] = bias[oc] + correlate(in[n, oc / multiplier], w[oc]). bias may be null.
template <typename T>
void depthwise_conv2d_forward(const T* in, const T* w, const T* bias, T* out,
                              const Conv2dGeometry& g, const Conv2dParams& p);

// Either of grad_input / grad_weight may be null (not requested). grad_weight is written
// (not accumulated); its sum over the batch is formed in batch order whatever the thread
// count, so it is bit-identical run to run.
template <typename T>
void depthwise_conv2d_backward(const T* grad_output, const T* in, const T* w, T* grad_input,
                               T* grad_weight, const Conv2dGeometry& g, const Conv2dParams& p);

}  // namespace cnnext::cpu
