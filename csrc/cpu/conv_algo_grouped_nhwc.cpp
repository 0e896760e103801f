// The grouped_nhwc row: grouped convolutions with 2-8 channels per group (in == out) on
// channels_last tensors (grouped_conv2d_nhwc.h): the forward, and the grad_input of stride-1
// layers as the forward of the transposed problem. grad_weight (and strided grad_input) take
// the other rows (im2col_nhwc, or the NCHW rows on copies).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>

#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "grouped_conv2d_nhwc.h"

namespace cnnext::cpu {
namespace {

// grad_input of a stride-1 layer is the forward of the transposed problem: grad_output
// convolved with each group's flipped, transposed kernel, padded by (k - 1) * d - p.
bool transposed_forward_applies(const Conv2dGeometry& g, const Conv2dParams& p) {
  return p.stride[0] == 1 && p.stride[1] == 1 && (g.kernel_h - 1) * p.dilation[0] >= p.padding[0] &&
         (g.kernel_w - 1) * p.dilation[1] >= p.padding[1];
}

bool applies(const ConvProblem& pr, ConvPass pass) {
  if (!pr.channels_last || (pr.dtype != at::kFloat && pr.dtype != at::kDouble) ||
      !grouped_nhwc_applies(pr.g, pr.dtype == at::kDouble))
    return false;
  return pass == ConvPass::Forward ||
         (pass == ConvPass::GradInput && transposed_forward_applies(pr.g, pr.p));
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::GroupedNhwc, pr, pass);
}

template <typename T>
void grad_input(const ConvProblem& pr, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const int64_t K = g.in_channels_per_group(), taps = g.kernel_h * g.kernel_w;
  // W'[gi * K + ci][co][r][s] = w[gi * K + co][ci][kh - 1 - r][kw - 1 - s]
  const at::Tensor flipped = at::empty_like(t.weight);
  const T* w = t.weight.data_ptr<T>();
  T* wf = flipped.data_ptr<T>();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    for (int64_t co = 0; co < K; ++co)
      for (int64_t ci = 0; ci < K; ++ci)
        for (int64_t k = 0; k < taps; ++k)
          wf[((gi * K + ci) * K + co) * taps + (taps - 1 - k)] =
              w[((gi * K + co) * K + ci) * taps + k];
  Conv2dGeometry tg = g;
  tg.in_h = g.out_h, tg.in_w = g.out_w, tg.out_h = g.in_h, tg.out_w = g.in_w;
  Conv2dParams tp = pr.p;
  tp.padding = {(g.kernel_h - 1) * pr.p.dilation[0] - pr.p.padding[0],
                (g.kernel_w - 1) * pr.p.dilation[1] - pr.p.padding[1]};
  grouped_nhwc_forward(t.grad_output.data_ptr<T>(), static_cast<const T*>(wf),
                       static_cast<const T*>(nullptr), t.grad_input.data_ptr<T>(), tg, tp);
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_grouped_nhwc", [&] {
    if (pass == ConvPass::GradInput) {
      grad_input<scalar_t>(pr, t);
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
