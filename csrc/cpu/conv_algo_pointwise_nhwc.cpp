// STUB: the pointwise_nhwc row (issue 13), being written; applies nowhere yet.
#include "conv_algorithms.h"
#include "conv_cost_model.h"

namespace cnnext::cpu {
namespace {

bool applies(const ConvProblem&, ConvPass) { return false; }

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::PointwiseNhwc, pr, pass);
}

void run(const ConvProblem&, ConvPass, ConvTensors&) {}

}  // namespace

const ConvAlgorithm kPointwiseNhwcAlgorithm{"pointwise_nhwc", applies, cost, run};

}  // namespace cnnext::cpu
