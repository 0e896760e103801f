#pragma once
// The table of CPU convolution algorithms (as oneDNN's implementation list and cuDNN's
// algorithm enumeration): each row says whether it applies to a problem and pass, estimates
// what it costs, and runs the pass. conv_select.h chooses a row per call; adding an algorithm
// means adding a row here, not editing the dispatcher.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

enum class ConvPass : int { Forward = 0, GradInput = 1, GradWeight = 2 };
constexpr int kConvPasses = 3;
const char* conv_pass_name(ConvPass pass);

// What applies() and cost() may look at: sizes and parameters, never data.
struct ConvProblem {
  Conv2dGeometry g;
  Conv2dParams p;
  at::ScalarType dtype;
  int64_t threads;  // threads the kernels may use (1 inside a parallel region)
  bool channels_last;  // activations (input, output and their gradients) in NHWC
};

// The tensors of one call, contiguous in the problem's layout (the weight always OIHW;
// NHWC rows repack it as they need). Forward reads input, weight, bias (undefined when
// absent) and writes every element of output. GradInput reads grad_output and weight and writes
// every element of grad_input. GradWeight reads grad_output and input and writes every element
// of grad_weight (sum over the batch in a fixed order: deterministic for a given thread count).
struct ConvTensors {
  at::Tensor input, weight, bias, grad_output;
  at::Tensor output, grad_input, grad_weight;
};

struct ConvAlgorithm {
  const char* name;
  bool (*applies)(const ConvProblem&, ConvPass);
  // Estimated seconds for the pass (conv_cost_model.h); only called where applies() holds.
  double (*cost)(const ConvProblem&, ConvPass);
  void (*run)(const ConvProblem&, ConvPass, ConvTensors&);
};

// The rows, in a fixed order: equal costs go to the earlier row.
struct ConvAlgorithmTable {
  const ConvAlgorithm* const* rows;
  int count;
};
ConvAlgorithmTable conv_algorithms();
// nullptr when no row has that name.
const ConvAlgorithm* find_conv_algorithm(const char* name);

// The rows, defined beside their kernels.
extern const ConvAlgorithm kDepthwiseAlgorithm;      // conv_algo_depthwise.cpp
extern const ConvAlgorithm kDepthwiseNhwcAlgorithm;  // conv_algo_depthwise.cpp (NHWC)
extern const ConvAlgorithm kPointwiseAlgorithm;  // conv_algo_im2col.cpp
extern const ConvAlgorithm kWinogradAlgorithm;   // conv_algo_winograd.cpp
extern const ConvAlgorithm kImplicitAlgorithm;   // conv_algo_implicit.cpp
extern const ConvAlgorithm kIm2colAlgorithm;     // conv_algo_im2col.cpp
extern const ConvAlgorithm kMatmulAlgorithm;     // conv_algo_matmul.cpp
extern const ConvAlgorithm kPointwiseNhwcAlgorithm;  // conv_algo_pointwise_nhwc.cpp
extern const ConvAlgorithm kIm2colNhwcAlgorithm;     // conv_algo_im2col_nhwc.cpp
extern const ConvAlgorithm kGroupedNhwcAlgorithm;    // conv_algo_grouped_nhwc.cpp

// The pixel tasks pointwise_nhwc's forward and grad_input run (each packs the weight once).
int64_t pointwise_nhwc_task_count(const ConvProblem& pr);

inline bool is_pointwise(const Conv2dGeometry& g, const Conv2dParams& p) {
  return g.kernel_h == 1 && g.kernel_w == 1 && p.stride[0] == 1 && p.stride[1] == 1 &&
         p.padding[0] == 0 && p.padding[1] == 0;
}

}  // namespace cnnext::cpu
