// The grouped_nhwc row: grouped convolutions with 2-8 channels per group (in == out) on
// channels_last tensors (grouped_conv2d_nhwc.h): the forward, and the grad_input (stride-1
// layers as the forward of the transposed problem, others as a gather per input pixel).
// grad_weight takes the other rows (im2col_nhwc, or the NCHW rows on copies).
#include <ATen/Dispatch.h>

#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "grouped_conv2d_nhwc.h"

namespace cnnext::cpu {
namespace {

bool applies(const ConvProblem& pr, ConvPass pass) {
  if (!pr.channels_last || (pr.dtype != at::kFloat && pr.dtype != at::kDouble) ||
      !grouped_nhwc_applies(pr.g, pr.dtype == at::kDouble))
    return false;
  return pass == ConvPass::Forward || pass == ConvPass::GradInput;
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::GroupedNhwc, pr, pass);
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_grouped_nhwc", [&] {
    if (pass == ConvPass::GradInput) {
      grouped_nhwc_grad_input(t.grad_output.data_ptr<scalar_t>(),
                              t.weight.data_ptr<scalar_t>(), t.grad_input.data_ptr<scalar_t>(),
                              pr.g, pr.p);
      return;
    }
    grouped_nhwc_forward(t.input.data_ptr<scalar_t>(), t.weight.data_ptr<scalar_t>(),
                         t.bias.defined() ? t.bias.data_ptr<scalar_t>() : nullptr,
                         t.output.data_ptr<scalar_t>(), pr.g, pr.p);
  });
}

}  // namespace

const ConvAlgorithm kGroupedNhwcAlgorithm{"grouped_nhwc", applies, cost, run};

}  // namespace cnnext::cpu
