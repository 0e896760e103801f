// Calling cnnext operators from C++ (the autograd kernels, csrc/autograd_*.cpp, and the Python
// fast calls, csrc/python_fast_calls.cpp): typed operator handles, calls below autograd, and
// the backward's rule for calling a *_backward operator.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/functions/utils.h>  // compute_requires_grad, for the kernels

#include <utility>

namespace cnnext {

// The typed handle of a cnnext operator (callers cache it in a function-local static).
template <class Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The operator's device kernel, skipping every autograd key (the caller records the graph).
template <class Signature, class... Args>
auto below_autograd(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

// A backward's call of a *_backward operator. With grad mode off (backward without
// create_graph) nothing can be recorded, so the operator's own (Python) autograd wrapper is
// skipped: it would cost about 15 us and record nothing. With it on, the call goes through that
// wrapper so double backward records.
template <class Signature, class... Args>
auto call_backward_op(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  if (at::GradMode::is_enabled()) {
    return op.call(std::forward<Args>(args)...);
  }
  return below_autograd(op, std::forward<Args>(args)...);
}

}  // namespace cnnext
