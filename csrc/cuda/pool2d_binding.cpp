// CUDA pooling operators: sizes, layouts and launches of the kernels in pool2d.cu. Results
// (outputs, indices, grad_input) follow self.suggest_memory_format(), as torch's do.
#include <torch/library.h>

#include <tuple>

#include "../common/pool_shapes.h"
#include "cuda_binding_utils.h"
#include "pool2d_launch.h"

namespace cnnext::cuda {
namespace {

// Argument checks and output sizes are csrc/common/pool_shapes.h, in the order the CPU ops
// (csrc/cpu/*pool2d.cpp) run them, so both devices reject the same inputs with the same errors.
// The CUDA kernels take float16, bfloat16, float32 and float64 (no integer pooling).
// Forward and backward alike (PoolDtypes: no integers, no int64, half types).
constexpr PoolDtypes kCudaDtypes{/*integers=*/false, /*int64=*/false, /*half=*/true};

// The kernels' plain geometry, filled from the shared one (p: nullptr for the adaptive ops,
// whose windows follow from the sizes).
PoolGeometry kernel_geometry(const at::Tensor& self, const Pool2dGeometry& s,
                             const Pool2dParams* p) {
  PoolGeometry g{};
  g.batch = s.batch; g.channels = s.channels;
  g.in_h = s.in_h; g.in_w = s.in_w;
  g.out_h = s.out_h; g.out_w = s.out_w;
  if (p != nullptr) {
    g.kernel_h = p->kernel_h; g.kernel_w = p->kernel_w;
    g.stride_h = p->stride_h; g.stride_w = p->stride_w;
    g.pad_h = p->pad_h; g.pad_w = p->pad_w;
    g.dil_h = p->dilation_h; g.dil_w = p->dilation_w;
  }
  g.channels_last = self.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return g;
}

at::MemoryFormat layout(const PoolGeometry& g) {
  return g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor empty_result(const at::Tensor& self, const PoolGeometry& g, int64_t h, int64_t w,
                        c10::ScalarType dtype) {
  return at::empty({g.batch, g.channels, h, w},
                   self.options().dtype(dtype).memory_format(layout(g)));
}

// Checks of a backward's grad_output (and indices), as the CPU backward ops run them.
void check_backward_inputs(const char* op, const at::Tensor& grad_output, const at::Tensor& self,
                           const at::Tensor* indices, const Pool2dGeometry& s) {
  check_same_dtype(op, grad_output, "grad_output", self);
  check_same_shape(op, grad_output, "grad_output", {s.batch, s.channels, s.out_h, s.out_w});
  if (indices != nullptr) check_indices(op, *indices, {s.batch, s.channels, s.out_h, s.out_w}, self);
  check_pool_dtype(op, self, kCudaDtypes);
}

std::tuple<at::Tensor, at::Tensor> max_pool(const at::Tensor& self_, const PoolGeometry& g,
                                            bool adaptive, const char* op) {
  const c10::cuda::CUDAGuard guard(self_.device());
  const DType dtype = dtype_of(self_, op);
  const at::Tensor self = self_.contiguous(layout(g));
  at::Tensor out = empty_result(self, g, g.out_h, g.out_w, self.scalar_type());
  at::Tensor indices = empty_result(self, g, g.out_h, g.out_w, at::kLong);
  if (out.numel() > 0)
    check_launch(launch_max_pool_forward(self.data_ptr(), out.data_ptr(),
                                         indices.data_ptr<int64_t>(), g, adaptive, dtype,
                                         stream_for(self)),
                 op);
  return {out, indices};
}

// Indices must already be checked (check_backward_inputs). Entries that name no element of
// their window contribute nothing (the gather never reads or writes out of bounds).
at::Tensor max_pool_backward(const at::Tensor& grad_output_, const at::Tensor& self,
                             const at::Tensor& indices_, const PoolGeometry& g, bool adaptive,
                             const char* op) {
  const c10::cuda::CUDAGuard guard(self.device());
  const DType dtype = dtype_of(self, op);
  const at::Tensor grad_output = grad_output_.contiguous(layout(g));
  const at::Tensor indices = indices_.contiguous(layout(g));
  at::Tensor grad_input = empty_result(self, g, g.in_h, g.in_w, self.scalar_type());
  if (grad_input.numel() > 0)
    check_launch(launch_max_pool_backward(grad_output.data_ptr(), indices.data_ptr<int64_t>(),
                                          grad_input.data_ptr(), g, adaptive, dtype,
                                          stream_for(self)),
                 op);
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& self,
                                                   c10::IntArrayRef kernel_size,
                                                   c10::IntArrayRef stride,
                                                   c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d";
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry s = check_pool2d(op, self, p);
  check_pool_dtype(op, self, kCudaDtypes);
  return max_pool(self, kernel_geometry(self, s, &p), /*adaptive=*/false, op);
}

// Values only: the indexed kernel's values (on the GPU the index store is a small share of
// the traffic; a dedicated kernel is not worth a second code path yet).
at::Tensor max_pool2d_values_cuda(const at::Tensor& self, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_cuda(self, kernel_size, stride, padding, dilation, ceil_mode));
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                                    const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                    c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    c10::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry s = check_pool2d(op, self, p);
  check_backward_inputs(op, grad_output, self, &indices, s);
  return max_pool_backward(grad_output, self, indices, kernel_geometry(self, s, &p),
                           /*adaptive=*/false, op);
}

// avg_pool2d's parameters (dilation 1) and geometry; torch checks the divisor before the sizes.
struct AvgSetup {
  Pool2dParams params;
  Pool2dGeometry geometry;
};

AvgSetup avg_setup(const char* op, const at::Tensor& self, c10::IntArrayRef kernel_size,
                   c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                   c10::optional<int64_t> divisor_override) {
  check_pool2d_rank(op, self);
  AvgSetup a;
  a.params = make_pool2d_params(op, kernel_size, stride, padding, {1}, ceil_mode);
  check_divisor(op, divisor_override);
  a.geometry = check_pool2d(op, self, a.params);
  return a;
}

// check_divisor has rejected 0, so 0 can stand for "no override" in the kernels' rule.
AvgPoolRule avg_rule(bool count_include_pad, c10::optional<int64_t> divisor_override) {
  return AvgPoolRule{count_include_pad, divisor_override.value_or(0)};
}

at::Tensor avg_pool2d_cuda(const at::Tensor& self_, c10::IntArrayRef kernel_size,
                           c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                           bool count_include_pad, c10::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d";
  const AvgSetup a = avg_setup(op, self_, kernel_size, stride, padding, ceil_mode, divisor_override);
  check_pool_dtype(op, self_, kCudaDtypes);
  const PoolGeometry g = kernel_geometry(self_, a.geometry, &a.params);
  const AvgPoolRule rule = avg_rule(count_include_pad, divisor_override);
  const c10::cuda::CUDAGuard guard(self_.device());
  const DType dtype = dtype_of(self_, op);
  const at::Tensor self = self_.contiguous(layout(g));
  at::Tensor out = empty_result(self, g, g.out_h, g.out_w, self.scalar_type());
  if (out.numel() > 0)
    check_launch(launch_avg_pool_forward(self.data_ptr(), out.data_ptr(), g, rule, dtype,
                                         stream_for(self)),
                 op);
  return out;
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output_, const at::Tensor& self,
                                    c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, bool ceil_mode,
                                    bool count_include_pad,
                                    c10::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  const AvgSetup a = avg_setup(op, self, kernel_size, stride, padding, ceil_mode, divisor_override);
  check_backward_inputs(op, grad_output_, self, nullptr, a.geometry);
  const PoolGeometry g = kernel_geometry(self, a.geometry, &a.params);
  const AvgPoolRule rule = avg_rule(count_include_pad, divisor_override);
  const c10::cuda::CUDAGuard guard(self.device());
  const DType dtype = dtype_of(self, op);
  const at::Tensor grad_output = grad_output_.contiguous(layout(g));
  at::Tensor grad_input = empty_result(self, g, g.in_h, g.in_w, self.scalar_type());
  if (grad_input.numel() > 0)
    check_launch(launch_avg_pool_backward(grad_output.data_ptr(), grad_input.data_ptr(), g, rule,
                                          dtype, stream_for(self)),
                 op);
  return grad_input;
}

// The adaptive backwards take their output size from grad_output, as the CPU ops do.
Pool2dGeometry adaptive_backward_geometry(const char* op, const at::Tensor& grad_output,
                                          const at::Tensor& self, bool max) {
  TORCH_CHECK(grad_output.dim() == 4, "cnnext.", op,
              ": expected a 4D grad_output, but got grad_output of size ", grad_output.sizes());
  return check_adaptive_pool2d(op, self, {grad_output.size(2), grad_output.size(3)}, max);
}

at::Tensor adaptive_avg_pool2d_cuda(const at::Tensor& self_, c10::IntArrayRef output_size) {
  const char* op = "adaptive_avg_pool2d";
  const Pool2dGeometry s = check_adaptive_pool2d(op, self_, output_size, /*max=*/false);
  check_pool_dtype(op, self_, kCudaDtypes);
  const PoolGeometry g = kernel_geometry(self_, s, nullptr);
  const c10::cuda::CUDAGuard guard(self_.device());
  const DType dtype = dtype_of(self_, op);
  const at::Tensor self = self_.contiguous(layout(g));
  at::Tensor out = empty_result(self, g, g.out_h, g.out_w, self.scalar_type());
  if (out.numel() > 0)
    check_launch(launch_adaptive_avg_pool_forward(self.data_ptr(), out.data_ptr(), g, dtype,
                                                  stream_for(self)),
                 op);
  return out;
}

at::Tensor adaptive_avg_pool2d_backward_cuda(const at::Tensor& grad_output_,
                                             const at::Tensor& self) {
  const char* op = "adaptive_avg_pool2d_backward";
  const Pool2dGeometry s = adaptive_backward_geometry(op, grad_output_, self, /*max=*/false);
  check_backward_inputs(op, grad_output_, self, nullptr, s);
  const PoolGeometry g = kernel_geometry(self, s, nullptr);
  const c10::cuda::CUDAGuard guard(self.device());
  const DType dtype = dtype_of(self, op);
  const at::Tensor grad_output = grad_output_.contiguous(layout(g));
  at::Tensor grad_input = empty_result(self, g, g.in_h, g.in_w, self.scalar_type());
  if (grad_input.numel() > 0)
    check_launch(launch_adaptive_avg_pool_backward(grad_output.data_ptr(), grad_input.data_ptr(),
                                                   g, dtype, stream_for(self)),
                 op);
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d_cuda(const at::Tensor& self,
                                                            c10::IntArrayRef output_size) {
  const char* op = "adaptive_max_pool2d";
  const Pool2dGeometry s = check_adaptive_pool2d(op, self, output_size, /*max=*/true);
  check_pool_dtype(op, self, kCudaDtypes);
  return max_pool(self, kernel_geometry(self, s, nullptr), /*adaptive=*/true, op);
}

at::Tensor adaptive_max_pool2d_backward_cuda(const at::Tensor& grad_output,
                                             const at::Tensor& self, const at::Tensor& indices) {
  const char* op = "adaptive_max_pool2d_backward";
  const Pool2dGeometry s = adaptive_backward_geometry(op, grad_output, self, /*max=*/true);
  check_backward_inputs(op, grad_output, self, &indices, s);
  return max_pool_backward(grad_output, self, indices, kernel_geometry(self, s, nullptr),
                           /*adaptive=*/true, op);
}

}  // namespace
}  // namespace cnnext::cuda

TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("max_pool2d", &cnnext::cuda::max_pool2d_cuda);
  m.impl("max_pool2d_values", &cnnext::cuda::max_pool2d_values_cuda);
  m.impl("max_pool2d_backward", &cnnext::cuda::max_pool2d_backward_cuda);
  m.impl("avg_pool2d", &cnnext::cuda::avg_pool2d_cuda);
  m.impl("avg_pool2d_backward", &cnnext::cuda::avg_pool2d_backward_cuda);
  m.impl("adaptive_avg_pool2d", &cnnext::cuda::adaptive_avg_pool2d_cuda);
  m.impl("adaptive_avg_pool2d_backward", &cnnext::cuda::adaptive_avg_pool2d_backward_cuda);
  m.impl("adaptive_max_pool2d", &cnnext::cuda::adaptive_max_pool2d_cuda);
  m.impl("adaptive_max_pool2d_backward", &cnnext::cuda::adaptive_max_pool2d_backward_cuda);
}
