// CPU avg_pool2d and its backward (count_include_pad, divisor_override, ceil_mode as torch).
#include <torch/library.h>
#include <torch/types.h>

#include "../common/pool_shapes.h"
#include "pool2d_kernels.h"

namespace cnnext::cpu {
namespace {

struct AvgSetup {
  Pool2dParams params;
  Pool2dGeometry geometry;
  std::vector<PoolRange> rows, cols;
};

AvgSetup avg_setup(const char* op, const at::Tensor& self, c10::IntArrayRef kernel_size,
                   c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                   c10::optional<int64_t> divisor_override) {
  AvgSetup s;
  s.params = make_pool2d_params(op, kernel_size, stride, padding, {1}, ceil_mode);
  check_divisor(op, divisor_override);  // torch checks the divisor before the sizes
  s.geometry = check_pool2d(op, self, s.params);
  const Pool2dParams& p = s.params;
  const Pool2dGeometry& g = s.geometry;
  s.rows = ranges(g.out_h, [&](int64_t o) {
    return avg_pool_range(o, g.in_h, p.kernel_h, p.stride_h, p.pad_h);
  });
  s.cols = ranges(g.out_w, [&](int64_t o) {
    return avg_pool_range(o, g.in_w, p.kernel_w, p.stride_w, p.pad_w);
  });
  return s;
}

at::Tensor avg_pool2d_cpu(const at::Tensor& self, c10::IntArrayRef kernel_size,
                          c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                          bool count_include_pad, c10::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d";
  check_pool2d_rank(op, self);
  const AvgSetup s = avg_setup(op, self, kernel_size, stride, padding, ceil_mode, divisor_override);
  check_pool_dtype(op, self, PoolDtypes{false, true, true});
  const Pool2dGeometry& g = s.geometry;
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = self.contiguous(fmt);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, self.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const bool has_div = divisor_override.has_value();
  const int64_t div_value = has_div ? *divisor_override : 1;
  auto divisor = [&](const PoolRange& rh, const PoolRange& rw) {
    return avg_pool_divisor(rh, rw, count_include_pad, has_div, div_value);
  };
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kLong, at::kBFloat16, at::kHalf, input.scalar_type(), "cnnext_avg_pool2d_cpu", [&] {
    avg_pool_forward<scalar_t>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                               pool_layout(g, cl), s.rows, s.cols,
                               s.params.kernel_h * s.params.kernel_w, divisor,
                               regular_cols(g.in_w, g.out_w, s.params.kernel_w,
                                            s.params.stride_w, s.params.pad_w, 1));
  });
  return out;
}

at::Tensor avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& self,
                                   c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                   c10::IntArrayRef padding, bool ceil_mode,
                                   bool count_include_pad, c10::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  check_pool2d_rank(op, self);
  const AvgSetup s = avg_setup(op, self, kernel_size, stride, padding, ceil_mode, divisor_override);
  const Pool2dGeometry& g = s.geometry;
  check_same_dtype(op, grad_output, "grad_output", self);
  check_same_shape(op, grad_output, "grad_output", {g.batch, g.channels, g.out_h, g.out_w});
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor go = grad_output.contiguous(fmt);
  // Zeroed by the kernel, plane by plane, just before its scatter.
  at::Tensor grad_input = at::empty(self.sizes(), self.options().memory_format(fmt));
  if (grad_input.numel() == 0 || go.numel() == 0) return grad_input.zero_();
  const bool has_div = divisor_override.has_value();
  const int64_t div_value = has_div ? *divisor_override : 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, self.scalar_type(), "cnnext_avg_pool2d_backward_cpu", [&] {
    auto share = [&](scalar_t g_out, const PoolRange& rh, const PoolRange& rw) {
      using A = at::opmath_type<scalar_t>;
      return static_cast<scalar_t>(
          static_cast<A>(g_out) /
          static_cast<A>(avg_pool_divisor(rh, rw, count_include_pad, has_div, div_value)));
    };
    avg_pool_backward<scalar_t>(go.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
                                pool_layout(g, cl), s.rows, s.cols, share);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("avg_pool2d", &avg_pool2d_cpu);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward_cpu);
}

}  // namespace cnnext::cpu
