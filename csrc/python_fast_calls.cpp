// Direct Python entry points for cnnext.functional's fast paths (plain tensors, int
// arguments). Each is one pybind11 call into the dispatcher's typed handle: about 1 us, where
// calling the operator through torch.ops (boxing every argument) costs about 4 us, a third of
// a small pooling call. The operators and their dispatch are unchanged: with needs_autograd
// false the call goes below the autograd key, as `torch._C._AutoDispatchBelowAutograd` does.
// torch.compile, functorch and forward AD keep calling the operators through torch.ops (see
// _fast_call in cnnext/functional.py).
#include <torch/extension.h>

#include <tuple>

#include "op_calls.h"

namespace cnnext {
namespace {

using IntList = std::vector<int64_t>;

// Runs call() without the GIL (a conv may take seconds; other Python threads go on), below
// the autograd key unless a graph must be recorded.
template <typename Call>
auto dispatch(bool needs_autograd, const Call& call) {
  pybind11::gil_scoped_release no_gil;
  if (needs_autograd) return call();
  at::AutoDispatchBelowAutograd below_autograd;
  return call();
}

at::Tensor conv2d_fast(bool needs_autograd, const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, const IntList& stride,
                       const IntList& padding, const IntList& dilation, int64_t groups) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                          c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, bool)>(
          "cnnext::conv2d");
  return dispatch(needs_autograd, [&] {
    return op.call(input, weight, bias, stride, padding, dilation, groups, false);
  });
}

using MaxPoolSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::IntArrayRef,
                                                            c10::IntArrayRef, c10::IntArrayRef,
                                                            c10::IntArrayRef, bool);

std::tuple<at::Tensor, at::Tensor> max_pool2d_fast(bool needs_autograd, const at::Tensor& self,
                                                   const IntList& kernel, const IntList& stride,
                                                   const IntList& padding, const IntList& dilation,
                                                   bool ceil_mode) {
  static const auto op = typed_op<MaxPoolSignature>("cnnext::max_pool2d");
  return dispatch(needs_autograd, [&] {
    return op.call(self, kernel, stride, padding, dilation, ceil_mode);
  });
}

at::Tensor max_pool2d_values_fast(bool needs_autograd, const at::Tensor& self,
                                  const IntList& kernel, const IntList& stride,
                                  const IntList& padding, const IntList& dilation, bool ceil_mode) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef,
                          c10::IntArrayRef, bool)>("cnnext::max_pool2d_values");
  return dispatch(needs_autograd, [&] {
    return op.call(self, kernel, stride, padding, dilation, ceil_mode);
  });
}

at::Tensor avg_pool2d_fast(bool needs_autograd, const at::Tensor& self, const IntList& kernel,
                           const IntList& stride, const IntList& padding, bool ceil_mode,
                           bool count_include_pad, c10::optional<int64_t> divisor_override) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef,
                          bool, bool, c10::optional<int64_t>)>("cnnext::avg_pool2d");
  return dispatch(needs_autograd, [&] {
    return op.call(self, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override);
  });
}

at::Tensor adaptive_avg_pool2d_fast(bool needs_autograd, const at::Tensor& self,
                                    const IntList& output_size) {
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, c10::IntArrayRef)>("cnnext::adaptive_avg_pool2d");
  return dispatch(needs_autograd, [&] { return op.call(self, output_size); });
}

}  // namespace

void add_fast_calls(PyObject* module) {
  auto m = pybind11::reinterpret_borrow<pybind11::module_>(module);
  m.def("conv2d_fast", &conv2d_fast);
  m.def("max_pool2d_fast", &max_pool2d_fast);
  m.def("max_pool2d_values_fast", &max_pool2d_values_fast);
  m.def("avg_pool2d_fast", &avg_pool2d_fast);
  m.def("adaptive_avg_pool2d_fast", &adaptive_avg_pool2d_fast);
}

}  // namespace cnnext
