// The direct depthwise rows: NCHW (depthwise_conv2d.h), one input channel per group, where a
// GEMM per group would have a single row (CNNEXT_CONV_ALGO=direct also lets it run few-channel
// layers, C_in/groups <= 4 and a reduction of at most 32, which it loses to the GEMM paths in
// general); and NHWC (depthwise_conv2d_nhwc.h), vectorised across channels.
#include <ATen/Dispatch.h>

#include "conv2d_workspace.h"
#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "depthwise_conv2d.h"
#include "depthwise_conv2d_nhwc.h"

namespace cnnext::cpu {
namespace {

bool applies(const ConvProblem& pr, ConvPass) {
  if (pr.channels_last || (pr.dtype != at::kFloat && pr.dtype != at::kDouble)) return false;
  return depthwise_applies(pr.g, conv_algo_override() == ConvAlgo::Direct);
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::Depthwise, pr, pass);
}

template <typename T>
void run_typed(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  switch (pass) {
    case ConvPass::Forward:
      depthwise_conv2d_forward(t.input.data_ptr<T>(), t.weight.data_ptr<T>(),
                               t.bias.defined() ? t.bias.data_ptr<T>() : nullptr,
                               t.output.data_ptr<T>(), pr.g, pr.p);
      return;
    case ConvPass::GradInput:
      depthwise_conv2d_backward(t.grad_output.data_ptr<T>(), static_cast<const T*>(nullptr),
                                t.weight.data_ptr<T>(), t.grad_input.data_ptr<T>(),
                                static_cast<T*>(nullptr), pr.g, pr.p);
      return;
    case ConvPass::GradWeight:
      depthwise_conv2d_backward(t.grad_output.data_ptr<T>(), t.input.data_ptr<T>(),
                                static_cast<const T*>(nullptr), static_cast<T*>(nullptr),
                                t.grad_weight.data_ptr<T>(), pr.g, pr.p);
      return;
  }
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_depthwise",
                             [&] { run_typed<scalar_t>(pr, pass, t); });
}

bool nhwc_applies(const ConvProblem& pr, ConvPass) {
  return pr.channels_last && (pr.dtype == at::kFloat || pr.dtype == at::kDouble) &&
         depthwise_nhwc_applies(pr.g);
}

template <typename T>
void run_nhwc_typed(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const T* no_input = nullptr;
  T* none = nullptr;
  switch (pass) {
    case ConvPass::Forward:
      depthwise_nhwc_forward(t.input.data_ptr<T>(), t.weight.data_ptr<T>(),
                             t.bias.defined() ? t.bias.data_ptr<T>() : nullptr,
                             t.output.data_ptr<T>(), pr.g, pr.p);
      return;
    case ConvPass::GradInput:
      depthwise_nhwc_backward(t.grad_output.data_ptr<T>(), no_input, t.weight.data_ptr<T>(),
                              t.grad_input.data_ptr<T>(), none, none, pr.g, pr.p);
      return;
    case ConvPass::GradWeight:
      depthwise_nhwc_backward(t.grad_output.data_ptr<T>(), t.input.data_ptr<T>(),
                              static_cast<const T*>(nullptr), none, t.grad_weight.data_ptr<T>(),
                              none, pr.g, pr.p);
      return;
  }
}

void run_nhwc(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_depthwise_nhwc",
                             [&] { run_nhwc_typed<scalar_t>(pr, pass, t); });
}

double nhwc_cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::DepthwiseNhwc, pr, pass);
}

}  // namespace

const ConvAlgorithm kDepthwiseAlgorithm{"direct", applies, cost, run};
const ConvAlgorithm kDepthwiseNhwcAlgorithm{"direct_nhwc", nhwc_applies, nhwc_cost, run_nhwc};

}  // namespace cnnext::cpu
