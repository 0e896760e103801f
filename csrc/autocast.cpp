// Autocast for cnnext.conv2d, as torch's conv2d under torch.autocast: on the "lower precision"
// list, so its tensors are cast to the autocast dtype (float16 by default on CUDA) before the op
// runs. Only the forward op is registered; backward runs in the dtypes the forward saw.
// Compiled in every build: the AutocastCUDA key exists in CPU-only torch too.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

namespace cnnext {
namespace {

template <c10::DeviceType kDevice>
at::Tensor conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                           bool relu) {
  // Leave autocast for the redispatch (and for the casts themselves).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(kDevice);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("cnnext::conv2d", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const c10::optional<at::Tensor>&, c10::IntArrayRef,
                                               c10::IntArrayRef, c10::IntArrayRef, int64_t, bool)>();
  // cached_cast casts only floating tensors on kDevice (never float64), as torch's policy does.
  return op.call(at::autocast::cached_cast(dtype, input, kDevice),
                 at::autocast::cached_cast(dtype, weight, kDevice),
                 at::autocast::cached_cast(dtype, bias, kDevice), stride, padding, dilation,
                 groups, relu);
}

}  // namespace
}  // namespace cnnext

TORCH_LIBRARY_IMPL(cnnext, AutocastCUDA, m) {
  m.impl("conv2d", &cnnext::conv2d_autocast<c10::DeviceType::CUDA>);
}
