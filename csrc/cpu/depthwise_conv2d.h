#pragma once
// Direct convolution for layers whose GEMM would be far too thin (K = C_in/groups * kh * kw
// small): depthwise convs (groups == C_in, any channel multiplier), single-channel first layers
// (C_in == 1) and few-channel ones (RGB 3x3). Each input plane is padded once and read by all
// the output channels of its group; no im2col, no GEMM.
#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// Depthwise (groups == C_in > 1, any channel multiplier): a GEMM per group would have one
// row and K = kh*kw. Measured against im2col + an MKL-class GEMM, the direct loops lose on
// short rows with many output channels per input plane (LeNet's 1->6 5x5: 2x) and on RGB 3x3
// (4x), so those stay on the GEMM path; CNNEXT_CONV_ALGO=direct forces any K <= 32 here.
constexpr int64_t kDirectMaxReduction = 32;
inline bool depthwise_applies(const Conv2dGeometry& g, bool forced) {
  const int64_t cin_g = g.in_channels_per_group();
  if (forced) return cin_g == 1 || (cin_g <= 4 && g.col_rows() <= kDirectMaxReduction);
  return cin_g == 1 && g.groups > 1;
}

// out[n, oc] = bias[oc] + sum over the group's input channels ci of correlate(in[n, ci], w[oc, ci]).
// bias may be null.
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
