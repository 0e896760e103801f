// CUDA pooling operators: sizes, layouts and launches of the kernels in pool2d.cu. Results
// (outputs, indices, grad_input) follow self.suggest_memory_format(), as torch's do.
#include <torch/library.h>

#include "cuda_binding_utils.h"
#include "pool2d_launch.h"

namespace cnnext::cuda {
namespace {

// TODO(merge): replace with csrc/common/pool_shapes.h (the pooling helper's argument checks
// and output sizes, shared with the CPU kernels). Until then: torch's output-size rule and the
// basic checks, so the kernels can be exercised.
std::array<int64_t, 2> pair_arg(c10::IntArrayRef v, const char* op, const char* name,
                                std::array<int64_t, 2> if_empty) {
  if (v.empty()) return if_empty;
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "cnnext.", op, ": ", name,
              " must either be a single int, or a tuple of two ints");
  return v.size() == 1 ? std::array<int64_t, 2>{v[0], v[0]} : std::array<int64_t, 2>{v[0], v[1]};
}

int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil) {
  const int64_t num = in + 2 * pad - dil * (k - 1) - 1 + (ceil ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  // The last window must start inside the input or the left padding.
  if (ceil && (out - 1) * stride >= in + pad) --out;
  return out;
}

struct WindowArgs {
  std::array<int64_t, 2> kernel, stride, padding, dilation;
};

WindowArgs window_args(const char* op, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                       c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  WindowArgs w;
  w.kernel = pair_arg(kernel_size, op, "kernel_size", {0, 0});
  w.stride = pair_arg(stride, op, "stride", w.kernel);  // empty stride: the kernel size
  w.padding = pair_arg(padding, op, "padding", {0, 0});
  w.dilation = pair_arg(dilation, op, "dilation", {1, 1});
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(w.kernel[i] > 0, "cnnext.", op, ": kernel_size must be greater than zero");
    TORCH_CHECK(w.stride[i] > 0, "cnnext.", op, ": stride must be greater than zero");
    TORCH_CHECK(w.dilation[i] > 0, "cnnext.", op, ": dilation must be greater than zero");
    TORCH_CHECK(w.padding[i] >= 0 && w.padding[i] <= w.kernel[i] / 2, "cnnext.", op,
                ": pad should be at most half of effective kernel size, but got pad=",
                w.padding[i], ", kernel_size=", w.kernel[i]);
  }
  return w;
}

void check_input(const at::Tensor& self, const char* op) {
  TORCH_CHECK(self.dim() == 4 && self.size(1) > 0 && self.size(2) > 0 && self.size(3) > 0,
              "cnnext.", op, ": Expected 4D (batched) input with non-zero channel, height and "
              "width, but got input of size: ", self.sizes());
  TORCH_CHECK(self.is_cuda(), "cnnext.", op, ": expected a CUDA tensor, got ", self.device());
}

PoolGeometry geometry(const at::Tensor& self, int64_t out_h, int64_t out_w, const WindowArgs* w) {
  PoolGeometry g{};
  g.batch = self.size(0); g.channels = self.size(1);
  g.in_h = self.size(2); g.in_w = self.size(3);
  g.out_h = out_h; g.out_w = out_w;
  if (w != nullptr) {
    g.kernel_h = w->kernel[0]; g.kernel_w = w->kernel[1];
    g.stride_h = w->stride[0]; g.stride_w = w->stride[1];
    g.pad_h = w->padding[0]; g.pad_w = w->padding[1];
    g.dil_h = w->dilation[0]; g.dil_w = w->dilation[1];
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

void check_grad(const at::Tensor& grad_output, const PoolGeometry& g, const char* op) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.batch &&
                  grad_output.size(1) == g.channels && grad_output.size(2) == g.out_h &&
                  grad_output.size(3) == g.out_w,
              "cnnext.", op, ": expected grad_output of size [", g.batch, ", ", g.channels, ", ",
              g.out_h, ", ", g.out_w, "], but got ", grad_output.sizes());
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

at::Tensor max_pool_backward(const at::Tensor& grad_output_, const at::Tensor& self,
                             const at::Tensor& indices_, const PoolGeometry& g, bool adaptive,
                             const char* op) {
  check_grad(grad_output_, g, op);
  TORCH_CHECK(indices_.scalar_type() == at::kLong && indices_.sizes() == grad_output_.sizes(),
              "cnnext.", op, ": expected int64 indices of size ", grad_output_.sizes());
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
  check_input(self, "max_pool2d");
  const WindowArgs w = window_args("max_pool2d", kernel_size, stride, padding, dilation);
  const int64_t oh = pooled_size(self.size(2), w.kernel[0], w.padding[0], w.stride[0], w.dilation[0], ceil_mode);
  const int64_t ow = pooled_size(self.size(3), w.kernel[1], w.padding[1], w.stride[1], w.dilation[1], ceil_mode);
  TORCH_CHECK(oh > 0 && ow > 0, "cnnext.max_pool2d: Given input size: (", self.size(1), "x",
              self.size(2), "x", self.size(3), "). Calculated output size: (", self.size(1), "x",
              oh, "x", ow, "). Output size is too small");
  return max_pool(self, geometry(self, oh, ow, &w), false, "max_pool2d");
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                                    const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                    c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    c10::IntArrayRef dilation, bool ceil_mode) {
  check_input(self, "max_pool2d_backward");
  const WindowArgs w = window_args("max_pool2d_backward", kernel_size, stride, padding, dilation);
  const int64_t oh = pooled_size(self.size(2), w.kernel[0], w.padding[0], w.stride[0], w.dilation[0], ceil_mode);
  const int64_t ow = pooled_size(self.size(3), w.kernel[1], w.padding[1], w.stride[1], w.dilation[1], ceil_mode);
  return max_pool_backward(grad_output, self, indices, geometry(self, oh, ow, &w), false,
                           "max_pool2d_backward");
}

AvgPoolRule avg_rule(bool count_include_pad, c10::optional<int64_t> divisor_override,
                     const char* op) {
  if (divisor_override.has_value())
    TORCH_CHECK(*divisor_override != 0, "cnnext.", op, ": divisor must be not zero");
  return AvgPoolRule{count_include_pad, divisor_override.value_or(0)};
}

PoolGeometry avg_geometry(const at::Tensor& self, c10::IntArrayRef kernel_size,
                          c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                          const char* op) {
  const WindowArgs w = window_args(op, kernel_size, stride, padding, {});
  const int64_t oh = pooled_size(self.size(2), w.kernel[0], w.padding[0], w.stride[0], 1, ceil_mode);
  const int64_t ow = pooled_size(self.size(3), w.kernel[1], w.padding[1], w.stride[1], 1, ceil_mode);
  TORCH_CHECK(oh > 0 && ow > 0, "cnnext.", op, ": Given input size: (", self.size(1), "x",
              self.size(2), "x", self.size(3), "). Calculated output size: (", self.size(1), "x",
              oh, "x", ow, "). Output size is too small");
  return geometry(self, oh, ow, &w);
}

at::Tensor avg_pool2d_cuda(const at::Tensor& self_, c10::IntArrayRef kernel_size,
                           c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                           bool count_include_pad, c10::optional<int64_t> divisor_override) {
  check_input(self_, "avg_pool2d");
  const AvgPoolRule rule = avg_rule(count_include_pad, divisor_override, "avg_pool2d");
  const PoolGeometry g = avg_geometry(self_, kernel_size, stride, padding, ceil_mode, "avg_pool2d");
  const c10::cuda::CUDAGuard guard(self_.device());
  const DType dtype = dtype_of(self_, "avg_pool2d");
  const at::Tensor self = self_.contiguous(layout(g));
  at::Tensor out = empty_result(self, g, g.out_h, g.out_w, self.scalar_type());
  if (out.numel() > 0)
    check_launch(launch_avg_pool_forward(self.data_ptr(), out.data_ptr(), g, rule, dtype,
                                         stream_for(self)),
                 "avg_pool2d");
  return out;
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output_, const at::Tensor& self,
                                    c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, bool ceil_mode,
                                    bool count_include_pad,
                                    c10::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  check_input(self, op);
  const AvgPoolRule rule = avg_rule(count_include_pad, divisor_override, op);
  const PoolGeometry g = avg_geometry(self, kernel_size, stride, padding, ceil_mode, op);
  check_grad(grad_output_, g, op);
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

PoolGeometry adaptive_geometry(const at::Tensor& self, c10::IntArrayRef output_size,
                               const char* op) {
  TORCH_CHECK(output_size.size() == 2, "cnnext.", op, ": output_size must be 2");
  TORCH_CHECK(output_size[0] >= 0 && output_size[1] >= 0, "cnnext.", op,
              ": elements of output_size must be greater than or equal to 0 but received {",
              output_size[0], ", ", output_size[1], "}");
  return geometry(self, output_size[0], output_size[1], nullptr);
}

at::Tensor adaptive_avg_pool2d_cuda(const at::Tensor& self_, c10::IntArrayRef output_size) {
  const char* op = "adaptive_avg_pool2d";
  check_input(self_, op);
  const PoolGeometry g = adaptive_geometry(self_, output_size, op);
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
  check_input(self, op);
  TORCH_CHECK(grad_output_.dim() == 4, "cnnext.", op, ": expected 4D grad_output");
  const PoolGeometry g = geometry(self, grad_output_.size(2), grad_output_.size(3), nullptr);
  check_grad(grad_output_, g, op);
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
  check_input(self, op);
  return max_pool(self, adaptive_geometry(self, output_size, op), true, op);
}

at::Tensor adaptive_max_pool2d_backward_cuda(const at::Tensor& grad_output,
                                             const at::Tensor& self, const at::Tensor& indices) {
  const char* op = "adaptive_max_pool2d_backward";
  check_input(self, op);
  TORCH_CHECK(grad_output.dim() == 4, "cnnext.", op, ": expected 4D grad_output");
  const PoolGeometry g = geometry(self, grad_output.size(2), grad_output.size(3), nullptr);
  return max_pool_backward(grad_output, self, indices, g, true, op);
}

}  // namespace
}  // namespace cnnext::cuda

TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("max_pool2d", &cnnext::cuda::max_pool2d_cuda);
  m.impl("max_pool2d_backward", &cnnext::cuda::max_pool2d_backward_cuda);
  m.impl("avg_pool2d", &cnnext::cuda::avg_pool2d_cuda);
  m.impl("avg_pool2d_backward", &cnnext::cuda::avg_pool2d_backward_cuda);
  m.impl("adaptive_avg_pool2d", &cnnext::cuda::adaptive_avg_pool2d_cuda);
  m.impl("adaptive_avg_pool2d_backward", &cnnext::cuda::adaptive_avg_pool2d_backward_cuda);
  m.impl("adaptive_max_pool2d", &cnnext::cuda::adaptive_max_pool2d_cuda);
  m.impl("adaptive_max_pool2d_backward", &cnnext::cuda::adaptive_max_pool2d_backward_cuda);
}
