// The Winograd F(4x4, 3x3) row: float32 3x3 stride-1 ungrouped layers, forward and grad_input
// (a 3x3 stride-1 conv of grad_output with the flipped, transposed kernel). float32 only: its
// rounding error (about 10-50x a direct sum's) is sized for float32 tolerances.
#include <limits>

#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "winograd_conv2d.h"

namespace cnnext::cpu {
namespace {

// grad_input's transposed problem pads by 2 d - p: negative where p > 2 d.
bool grad_input_padding_ok(const Conv2dParams& p) {
  return 2 * p.dilation[0] - p.padding[0] >= 0 && 2 * p.dilation[1] - p.padding[1] >= 0;
}

bool applies(const ConvProblem& pr, ConvPass pass) {
  if (pr.channels_last || pr.dtype != at::kFloat || !winograd_applies(pr.g, pr.p)) return false;
  if (pass == ConvPass::GradWeight) return false;
  return pass == ConvPass::Forward || grad_input_padding_ok(pr.p);
}

// The rule never picks Winograd for thin layers (fewer than 16 channels either way or
// C_in * C_out < 512): there the transforms' extra rounding (README, Limits) buys little, and
// the census the cost is fitted on has no such 3x3 layer to check an extrapolation against (the
// refit of 2026-12-01 predicted Winograd for 32 -> 2 channels). Forcing it still runs it.
double cost(const ConvProblem& pr, ConvPass pass) {
  const int64_t in = pass == ConvPass::Forward ? pr.g.in_channels : pr.g.out_channels;
  const int64_t out = pass == ConvPass::Forward ? pr.g.out_channels : pr.g.in_channels;
  if (in < 16 || out < 16 || in * out < 512) return std::numeric_limits<double>::infinity();
  return estimate_seconds(ConvAlgoId::Winograd, pr, pass);
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const Conv2dParams& p = pr.p;
  if (pass == ConvPass::Forward) {
    const WinogradProblem wp{g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels,
                             g.out_h, g.out_w, p.padding[0], p.padding[1], p.dilation[0],
                             p.dilation[1], false};
    winograd_conv2d_3x3(wp, t.input.data_ptr<float>(), t.weight.data_ptr<float>(),
                        t.bias.defined() ? t.bias.data_ptr<float>() : nullptr,
                        t.output.data_ptr<float>());
    return;
  }
  const WinogradProblem wp{g.batch, g.out_channels, g.out_h, g.out_w, g.in_channels,
                           g.in_h, g.in_w, 2 * p.dilation[0] - p.padding[0],
                           2 * p.dilation[1] - p.padding[1], p.dilation[0], p.dilation[1], true};
  winograd_conv2d_3x3(wp, t.grad_output.data_ptr<float>(), t.weight.data_ptr<float>(), nullptr,
                      t.grad_input.data_ptr<float>());
}

}  // namespace

const ConvAlgorithm kWinogradAlgorithm{"winograd", applies, cost, run};

}  // namespace cnnext::cpu
