// Autograd for conv2d, in C++ (it was Python's torch.library.register_autograd, whose wrapper
// cost about 60 us per forward + backward: most of a small conv at batch 1). A
// torch::autograd::Function runs the op below autograd (on whatever device kernel the
// dispatcher picks; AutocastCUDA casts before reaching here) and its backward calls
// conv2d_backward, which keeps its Python autograd (cnnext/ops.py) for double backward.
// Forward-mode AD stays in Python (cnnext/functional.py), before the operator is called.
#include <ATen/ATen.h>  // Tensor operators (the ReLU mask)
#include <torch/autograd.h>
#include <torch/library.h>

#include "op_calls.h"

namespace cnnext {
namespace {

using at::Tensor;
using c10::IntArrayRef;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Conv2dSignature = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                               IntArrayRef, IntArrayRef, IntArrayRef, int64_t, bool);
using Conv2dBackwardSignature = std::tuple<Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, IntArrayRef, IntArrayRef, IntArrayRef, int64_t,
    std::array<bool, 3>);

const auto& conv2d_op() {
  static const auto op = typed_op<Conv2dSignature>("cnnext::conv2d");
  return op;
}
const auto& conv2d_backward_op() {
  static const auto op = typed_op<Conv2dBackwardSignature>("cnnext::conv2d_backward");
  return op;
}

constexpr size_t kConv2dArguments = 8;  // input, weight, bias, stride, ..., groups, relu

}  // namespace

// Outside the anonymous namespace so its node's name reads
// "torch::autograd::CppNode<cnnext::Conv2dFunction>".
struct Conv2dFunction : torch::autograd::Function<Conv2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                        const std::optional<Tensor>& bias, IntArrayRef stride,
                        IntArrayRef padding, IntArrayRef dilation, int64_t groups, bool relu) {
    Tensor output = below_autograd(conv2d_op(), input, weight, bias, stride, padding, dilation,
                                   groups, relu);
    // The fused ReLU's gradient passes where the output is positive (torch.relu's rule).
    ctx->save_for_backward({input, weight, relu ? output : Tensor()});
    auto& data = ctx->saved_data;
    data["stride"] = stride;
    data["padding"] = padding;
    data["dilation"] = dilation;
    data["groups"] = groups;
    data["relu"] = relu;
    data["has_bias"] = bias.has_value() && bias->defined();
    ctx->set_materialize_grads(false);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(kConv2dArguments);
    auto& data = ctx->saved_data;
    // needs_input_grad counts tensor arguments only: bias is the third when given.
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      data["has_bias"].toBool() && ctx->needs_input_grad(2)};
    Tensor grad_output = grads[0];
    if (!(mask[0] || mask[1] || mask[2]) || !grad_output.defined()) {
      return result;
    }
    const auto saved = ctx->get_saved_variables();
    const Tensor& input = saved[0];
    const Tensor& weight = saved[1];
    if (data["relu"].toBool()) {
      const Tensor& output = saved[2];
      grad_output = grad_output * (output > 0).to(grad_output.scalar_type());
    }
    auto [grad_input, grad_weight, grad_bias] = call_backward_op(
        conv2d_backward_op(), grad_output, input, weight, data["stride"].toIntVector(),
        data["padding"].toIntVector(), data["dilation"].toIntVector(), data["groups"].toInt(),
        mask);
    // Unselected results come back as empty tensors: undefined here.
    if (mask[0]) result[0] = std::move(grad_input);
    if (mask[1]) result[1] = std::move(grad_weight);
    if (mask[2]) result[2] = std::move(grad_bias);
    return result;
  }
};

namespace {

// No graph node unless a gradient can flow.
Tensor conv2d_autograd(const Tensor& input, const Tensor& weight,
                       const std::optional<Tensor>& bias, IntArrayRef stride,
                       IntArrayRef padding, IntArrayRef dilation, int64_t groups, bool relu) {
  if (!torch::autograd::compute_requires_grad(input, weight, bias)) {
    return below_autograd(conv2d_op(), input, weight, bias, stride, padding, dilation, groups,
                          relu);
  }
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups, relu);
}

}  // namespace
}  // namespace cnnext

TORCH_LIBRARY_IMPL(cnnext, Autograd, m) {
  m.impl("conv2d", &cnnext::conv2d_autograd);
}
