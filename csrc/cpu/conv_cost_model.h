#pragma once
// The default algorithm choice: each algorithm's time estimated as
//   seconds = c_call + c_task * tasks + c_mac * macs + c_byte * bytes
// where tasks counts the algorithm's inner kernel calls (a GEMM per image and group: packing
// and a parallel region each), and macs and bytes are what that algorithm does for the pass (multiply-adds including the
// micro-kernel's padding of thin dimensions and wasted wide columns; memory it moves including
// its own buffers: im2col columns, phase copies, Winograd transforms). The coefficients are
// fitted per algorithm and pass on the layer census by tools/fit_conv_cost.py, which writes
// conv_cost_coefficients.h and keeps the shapes and times it fitted in
// csrc/cpu/conv_cost_fit_<isa>.json.
#include "conv_algorithms.h"

namespace cnnext::cpu {

enum class ConvAlgoId : int {
  Depthwise = 0,  // NCHW direct
  Pointwise,
  Winograd,
  Implicit,
  Im2col,
  Matmul,
  PointwiseNhwc,
  Im2colNhwc,
  DepthwiseNhwc,
  GroupedNhwc,
  Count
};

struct CostFeatures {
  double calls, tasks, macs, bytes;
};

CostFeatures cost_features(ConvAlgoId algo, const ConvProblem& pr, ConvPass pass);
double estimate_seconds(ConvAlgoId algo, const ConvProblem& pr, ConvPass pass);

// Estimated seconds to convert `bytes` bytes of activations between NCHW and NHWC (torch's
// copy_ of a permuted tensor), fitted beside the rows' coefficients.
double layout_copy_seconds(double bytes);

}  // namespace cnnext::cpu
