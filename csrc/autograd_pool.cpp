// Autograd for the pooling operators, in C++ (it was Python's torch.library.register_autograd,
// whose wrapper cost about 60 us per forward + backward, more than a small pool itself).
// Each forward op gets a torch::autograd::Function that runs the op below autograd (on whatever
// device kernel the dispatcher picks) and whose backward calls the matching *_backward operator.
// The backward operators keep their Python autograd (cnnext/ops.py): double backward records
// through them when the backward runs with create_graph.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "op_calls.h"

namespace cnnext {
namespace {

using at::Tensor;
using c10::IntArrayRef;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- operator handles (looked up once) -------------------------------------------------------
using MaxPool2dSignature = std::tuple<Tensor, Tensor>(const Tensor&, IntArrayRef, IntArrayRef,
                                                      IntArrayRef, IntArrayRef, bool);
using MaxPool2dValuesSignature = Tensor(const Tensor&, IntArrayRef, IntArrayRef, IntArrayRef,
                                        IntArrayRef, bool);
using MaxPool2dBackwardSignature = Tensor(const Tensor&, const Tensor&, const Tensor&, IntArrayRef,
                                          IntArrayRef, IntArrayRef, IntArrayRef, bool);
using AvgPool2dSignature = Tensor(const Tensor&, IntArrayRef, IntArrayRef, IntArrayRef, bool, bool,
                                  std::optional<int64_t>);
using AvgPool2dBackwardSignature = Tensor(const Tensor&, const Tensor&, IntArrayRef, IntArrayRef,
                                          IntArrayRef, bool, bool, std::optional<int64_t>);
using AdaptiveAvgPool2dSignature = Tensor(const Tensor&, IntArrayRef);
using AdaptiveAvgPool2dBackwardSignature = Tensor(const Tensor&, const Tensor&);
using AdaptiveMaxPool2dSignature = std::tuple<Tensor, Tensor>(const Tensor&, IntArrayRef);
using AdaptiveMaxPool2dBackwardSignature = Tensor(const Tensor&, const Tensor&, const Tensor&);

const auto& max_pool2d_op() {
  static const auto op = typed_op<MaxPool2dSignature>("cnnext::max_pool2d");
  return op;
}
const auto& max_pool2d_values_op() {
  static const auto op = typed_op<MaxPool2dValuesSignature>("cnnext::max_pool2d_values");
  return op;
}
const auto& max_pool2d_backward_op() {
  static const auto op = typed_op<MaxPool2dBackwardSignature>("cnnext::max_pool2d_backward");
  return op;
}
const auto& max_pool2d_taps_op() {
  static const auto op = typed_op<MaxPool2dSignature>("cnnext::max_pool2d_taps");
  return op;
}
const auto& max_pool2d_taps_backward_op() {
  static const auto op = typed_op<MaxPool2dBackwardSignature>("cnnext::max_pool2d_taps_backward");
  return op;
}
const auto& avg_pool2d_op() {
  static const auto op = typed_op<AvgPool2dSignature>("cnnext::avg_pool2d");
  return op;
}
const auto& avg_pool2d_backward_op() {
  static const auto op = typed_op<AvgPool2dBackwardSignature>("cnnext::avg_pool2d_backward");
  return op;
}
const auto& adaptive_avg_pool2d_op() {
  static const auto op = typed_op<AdaptiveAvgPool2dSignature>("cnnext::adaptive_avg_pool2d");
  return op;
}
const auto& adaptive_avg_pool2d_backward_op() {
  static const auto op =
      typed_op<AdaptiveAvgPool2dBackwardSignature>("cnnext::adaptive_avg_pool2d_backward");
  return op;
}
const auto& adaptive_max_pool2d_op() {
  static const auto op = typed_op<AdaptiveMaxPool2dSignature>("cnnext::adaptive_max_pool2d");
  return op;
}
const auto& adaptive_max_pool2d_backward_op() {
  static const auto op =
      typed_op<AdaptiveMaxPool2dBackwardSignature>("cnnext::adaptive_max_pool2d_backward");
  return op;
}

// ---- saved window parameters ------------------------------------------------------------------
// max_pool2d and max_pool2d_values share their window; kept in ctx->saved_data by name.
void save_max_window(AutogradContext* ctx, IntArrayRef kernel_size, IntArrayRef stride,
                     IntArrayRef padding, IntArrayRef dilation, bool ceil_mode) {
  ctx->saved_data["kernel_size"] = kernel_size;
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  ctx->saved_data["dilation"] = dilation;
  ctx->saved_data["ceil_mode"] = ceil_mode;
}

struct MaxWindow {
  std::vector<int64_t> kernel_size, stride, padding, dilation;
  bool ceil_mode;
};

MaxWindow saved_max_window(AutogradContext* ctx) {
  auto& data = ctx->saved_data;
  return {data["kernel_size"].toIntVector(), data["stride"].toIntVector(),
          data["padding"].toIntVector(), data["dilation"].toIntVector(),
          data["ceil_mode"].toBool()};
}

// Undefined gradients for the non-tensor arguments after the first (self).
variable_list grad_of_self_only(Tensor grad_self, size_t num_arguments) {
  variable_list grads(num_arguments);
  grads[0] = std::move(grad_self);
  return grads;
}

}  // namespace

// The Functions are outside the anonymous namespace so their nodes' names read
// "torch::autograd::CppNode<cnnext::MaxPool2dFunction>".

// ---- max_pool2d: d(out)/d(self) scatters grad_output to the indices -------------------------
struct MaxPool2dFunction : torch::autograd::Function<MaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& self, IntArrayRef kernel_size,
                               IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                               bool ceil_mode) {
    auto [out, indices] =
        below_autograd(max_pool2d_op(), self, kernel_size, stride, padding, dilation, ceil_mode);
    ctx->save_for_backward({self, indices});
    save_max_window(ctx, kernel_size, stride, padding, dilation, ceil_mode);
    ctx->mark_non_differentiable({indices});
    // The indices' gradient is never read: no zeros made for it.
    ctx->set_materialize_grads(false);
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_self;
    if (ctx->needs_input_grad(0) && grads[0].defined()) {
      const auto saved = ctx->get_saved_variables();
      const MaxWindow w = saved_max_window(ctx);
      grad_self = call_backward_op(max_pool2d_backward_op(), grads[0], saved[0], saved[1],
                                   w.kernel_size, w.stride, w.padding, w.dilation, w.ceil_mode);
    }
    return grad_of_self_only(std::move(grad_self), 6);
  }
};

// max_pool2d_values is what cnnext.functional calls whenever the caller wants no indices. Here
// a gradient can flow, so the forward also records where each maximum lies: on the CPU in
// channels_last (window area <= 255) as uint8 window taps (max_pool2d_taps), an eighth of the
// int64 indices' bytes to write and read back in a training step; elsewhere as max_pool2d's
// indices.
struct MaxPool2dValuesFunction : torch::autograd::Function<MaxPool2dValuesFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& self, IntArrayRef kernel_size,
                        IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                        bool ceil_mode) {
    // channels_last only: NCHW planes scatter one output at a time, where decoding a tap
    // measured 3x slower than reading an int64 index (1x64x112^2, 3x3 stride 2, float32).
    const bool taps = self.is_cpu() && kernel_size.size() == 2 &&
                      kernel_size[0] * kernel_size[1] <= 255 &&
                      self.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    auto [out, positions] =
        taps ? below_autograd(max_pool2d_taps_op(), self, kernel_size, stride, padding, dilation,
                              ceil_mode)
             : below_autograd(max_pool2d_op(), self, kernel_size, stride, padding, dilation,
                              ceil_mode);
    ctx->save_for_backward({self, positions});
    save_max_window(ctx, kernel_size, stride, padding, dilation, ceil_mode);
    ctx->saved_data["taps"] = taps;
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_self;
    if (ctx->needs_input_grad(0) && grads[0].defined()) {
      const auto saved = ctx->get_saved_variables();
      const MaxWindow w = saved_max_window(ctx);
      const auto& op = ctx->saved_data["taps"].toBool() ? max_pool2d_taps_backward_op()
                                                         : max_pool2d_backward_op();
      grad_self = call_backward_op(op, grads[0], saved[0], saved[1], w.kernel_size, w.stride,
                                   w.padding, w.dilation, w.ceil_mode);
    }
    return grad_of_self_only(std::move(grad_self), 6);
  }
};

// ---- avg_pool2d: linear; the backward spreads grad_output over each window -------------------
struct AvgPool2dFunction : torch::autograd::Function<AvgPool2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& self, IntArrayRef kernel_size,
                        IntArrayRef stride, IntArrayRef padding, bool ceil_mode,
                        bool count_include_pad, std::optional<int64_t> divisor_override) {
    Tensor out = below_autograd(avg_pool2d_op(), self, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override);
    // self gives the backward the input's shape, dtype and layout.
    ctx->save_for_backward({self});
    auto& data = ctx->saved_data;
    data["kernel_size"] = kernel_size;
    data["stride"] = stride;
    data["padding"] = padding;
    data["ceil_mode"] = ceil_mode;
    data["count_include_pad"] = count_include_pad;
    data["divisor_override"] = divisor_override;
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_self;
    if (ctx->needs_input_grad(0) && grads[0].defined()) {
      auto& data = ctx->saved_data;
      grad_self = call_backward_op(
          avg_pool2d_backward_op(), grads[0], ctx->get_saved_variables()[0],
          data["kernel_size"].toIntVector(), data["stride"].toIntVector(),
          data["padding"].toIntVector(), data["ceil_mode"].toBool(),
          data["count_include_pad"].toBool(), data["divisor_override"].toOptional<int64_t>());
    }
    return grad_of_self_only(std::move(grad_self), 7);
  }
};

// ---- adaptive_avg_pool2d -----------------------------------------------------------------------
struct AdaptiveAvgPool2dFunction : torch::autograd::Function<AdaptiveAvgPool2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& self, IntArrayRef output_size) {
    Tensor out = below_autograd(adaptive_avg_pool2d_op(), self, output_size);
    ctx->save_for_backward({self});
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_self;
    if (ctx->needs_input_grad(0) && grads[0].defined()) {
      grad_self = call_backward_op(adaptive_avg_pool2d_backward_op(), grads[0],
                                   ctx->get_saved_variables()[0]);
    }
    return grad_of_self_only(std::move(grad_self), 2);
  }
};

// ---- adaptive_max_pool2d: as max_pool2d, scatters to the indices ----------------------------
struct AdaptiveMaxPool2dFunction : torch::autograd::Function<AdaptiveMaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& self,
                               IntArrayRef output_size) {
    auto [out, indices] = below_autograd(adaptive_max_pool2d_op(), self, output_size);
    ctx->save_for_backward({self, indices});
    ctx->mark_non_differentiable({indices});
    ctx->set_materialize_grads(false);
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_self;
    if (ctx->needs_input_grad(0) && grads[0].defined()) {
      const auto saved = ctx->get_saved_variables();
      grad_self = call_backward_op(adaptive_max_pool2d_backward_op(), grads[0], saved[0],
                                   saved[1]);
    }
    return grad_of_self_only(std::move(grad_self), 2);
  }
};

namespace {

// ---- Autograd kernels: no graph node unless a gradient can flow -------------------------------
std::tuple<Tensor, Tensor> max_pool2d_autograd(const Tensor& self, IntArrayRef kernel_size,
                                               IntArrayRef stride, IntArrayRef padding,
                                               IntArrayRef dilation, bool ceil_mode) {
  if (!torch::autograd::compute_requires_grad(self)) {
    return below_autograd(max_pool2d_op(), self, kernel_size, stride, padding, dilation,
                          ceil_mode);
  }
  auto outputs =
      MaxPool2dFunction::apply(self, kernel_size, stride, padding, dilation, ceil_mode);
  return {outputs[0], outputs[1]};
}

Tensor max_pool2d_values_autograd(const Tensor& self, IntArrayRef kernel_size,
                                  IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                                  bool ceil_mode) {
  if (!torch::autograd::compute_requires_grad(self)) {
    return below_autograd(max_pool2d_values_op(), self, kernel_size, stride, padding, dilation,
                          ceil_mode);
  }
  return MaxPool2dValuesFunction::apply(self, kernel_size, stride, padding, dilation, ceil_mode);
}

Tensor avg_pool2d_autograd(const Tensor& self, IntArrayRef kernel_size, IntArrayRef stride,
                           IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  if (!torch::autograd::compute_requires_grad(self)) {
    return below_autograd(avg_pool2d_op(), self, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override);
  }
  return AvgPool2dFunction::apply(self, kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override);
}

Tensor adaptive_avg_pool2d_autograd(const Tensor& self, IntArrayRef output_size) {
  if (!torch::autograd::compute_requires_grad(self)) {
    return below_autograd(adaptive_avg_pool2d_op(), self, output_size);
  }
  return AdaptiveAvgPool2dFunction::apply(self, output_size);
}

std::tuple<Tensor, Tensor> adaptive_max_pool2d_autograd(const Tensor& self,
                                                        IntArrayRef output_size) {
  if (!torch::autograd::compute_requires_grad(self)) {
    return below_autograd(adaptive_max_pool2d_op(), self, output_size);
  }
  auto outputs = AdaptiveMaxPool2dFunction::apply(self, output_size);
  return {outputs[0], outputs[1]};
}

}  // namespace
}  // namespace cnnext

TORCH_LIBRARY_IMPL(cnnext, Autograd, m) {
  m.impl("max_pool2d", &cnnext::max_pool2d_autograd);
  m.impl("max_pool2d_values", &cnnext::max_pool2d_values_autograd);
  m.impl("avg_pool2d", &cnnext::avg_pool2d_autograd);
  m.impl("adaptive_avg_pool2d", &cnnext::adaptive_avg_pool2d_autograd);
  m.impl("adaptive_max_pool2d", &cnnext::adaptive_max_pool2d_autograd);
}
