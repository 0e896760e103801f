// The implicit-GEMM row (implicit_conv2d.h): forward; grad_input of ungrouped stride-1 layers
// as the forward of the transposed problem (grad_output convolved with the flipped kernel, its
// channel axes swapped, padding d (k - 1) - p); grad_weight as dot products of grad_output's
// wide rows with the phase buffer's tap rows.
#include <ATen/Dispatch.h>

#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "conv_grad_weight_sum.h"
#include "implicit_conv2d.h"

namespace cnnext::cpu {
namespace {

struct Transposed {
  Conv2dGeometry g;
  Conv2dParams p;
};

Transposed transposed_problem(const Conv2dGeometry& g, const Conv2dParams& p) {
  Transposed t{g, Conv2dParams{{1, 1},
                               {p.dilation[0] * (g.kernel_h - 1) - p.padding[0],
                                p.dilation[1] * (g.kernel_w - 1) - p.padding[1]},
                               p.dilation,
                               1}};
  t.g.in_channels = g.out_channels, t.g.in_h = g.out_h, t.g.in_w = g.out_w;
  t.g.out_channels = g.in_channels, t.g.out_h = g.in_h, t.g.out_w = g.in_w;
  return t;
}

bool applies(const ConvProblem& pr, ConvPass pass) {
  if (pr.dtype != at::kFloat && pr.dtype != at::kDouble) return false;
  if (!implicit_conv2d_applies(pr.g, pr.p)) return false;
  if (pass != ConvPass::GradInput) return true;
  const Conv2dParams& p = pr.p;
  if (p.stride[0] != 1 || p.stride[1] != 1 || pr.g.groups != 1) return false;
  const Transposed t = transposed_problem(pr.g, p);
  return t.p.padding[0] >= 0 && t.p.padding[1] >= 0 && implicit_conv2d_applies(t.g, t.p);
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::Implicit, pr, pass);
}

template <typename T>
void run_typed(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  switch (pass) {
    case ConvPass::Forward:
      implicit_conv2d_forward(t.input.data_ptr<T>(), t.weight.data_ptr<T>(),
                              t.bias.defined() ? t.bias.data_ptr<T>() : nullptr,
                              t.output.data_ptr<T>(), g, pr.p);
      return;
    case ConvPass::GradInput: {
      const Transposed tp = transposed_problem(g, pr.p);
      const at::Tensor flipped = t.weight.flip({2, 3}).transpose(0, 1).contiguous();
      implicit_conv2d_forward(t.grad_output.data_ptr<T>(), flipped.data_ptr<T>(),
                              static_cast<const T*>(nullptr), t.grad_input.data_ptr<T>(), tp.g,
                              tp.p);
      return;
    }
    case ConvPass::GradWeight: {
      const T* go = t.grad_output.data_ptr<T>();
      const T* in = t.input.data_ptr<T>();
      sum_grad_weight_over_images(g.batch, pr.threads, t.grad_weight.data_ptr<T>(),
                                  t.grad_weight.numel(), [&](int64_t n0, int64_t n1, T* acc) {
                                    implicit_conv2d_grad_weight(go, in, n0, n1, acc, g, pr.p);
                                  });
      return;
    }
  }
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_implicit",
                             [&] { run_typed<scalar_t>(pr, pass, t); });
}

}  // namespace

const ConvAlgorithm kImplicitAlgorithm{"implicit", applies, cost, run};

}  // namespace cnnext::cpu
