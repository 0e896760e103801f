// CPU max_pool2d (values and flat per-plane indices) and its backward.
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>

#include "../common/pool_shapes.h"
#include "pool2d_kernels.h"

namespace cnnext::cpu {
namespace {

std::vector<PoolRange> max_rows(const Pool2dGeometry& g, const Pool2dParams& p) {
  return ranges(g.out_h, [&](int64_t o) {
    return max_pool_range(o, g.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  });
}

std::vector<PoolRange> max_cols(const Pool2dGeometry& g, const Pool2dParams& p) {
  return ranges(g.out_w, [&](int64_t o) {
    return max_pool_range(o, g.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  });
}

// Values and (with_indices) flat indices; without, indices is an undefined tensor.
std::tuple<at::Tensor, at::Tensor> max_pool2d_impl(const at::Tensor& self,
                                                   c10::IntArrayRef kernel_size,
                                                   c10::IntArrayRef stride,
                                                   c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode,
                                                   bool with_indices) {
  const char* op = "max_pool2d";
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry g = check_pool2d(op, self, p);
  check_pool_dtype(op, self, PoolDtypes{true, true, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = self.contiguous(fmt);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, self.options().memory_format(fmt));
  at::Tensor ind;
  if (with_indices) {
    ind = at::empty({g.batch, g.channels, g.out_h, g.out_w},
                    self.options().dtype(at::kLong).memory_format(fmt));
  }
  if (out.numel() == 0) return {out, ind};
  const PoolLayout L = pool_layout(g, cl);
  const auto rows = max_rows(g, p), cols = max_cols(g, p);
  AT_DISPATCH_ALL_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "cnnext_max_pool2d_cpu", [&] {
    max_pool_forward<scalar_t>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                               with_indices ? ind.data_ptr<int64_t>() : nullptr, L, rows, cols,
                               p.kernel_h * p.kernel_w,
                               regular_cols(g.in_w, g.out_w, p.kernel_w, p.stride_w, p.pad_w,
                                            p.dilation_w));
  });
  return {out, ind};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& self,
                                                  c10::IntArrayRef kernel_size,
                                                  c10::IntArrayRef stride,
                                                  c10::IntArrayRef padding,
                                                  c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_impl(self, kernel_size, stride, padding, dilation, ceil_mode, true);
}

at::Tensor max_pool2d_values_cpu(const at::Tensor& self, c10::IntArrayRef kernel_size,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(
      max_pool2d_impl(self, kernel_size, stride, padding, dilation, ceil_mode, false));
}

}  // namespace

// Shared with adaptive_max_pool2d_backward: scatters grad_output to the recorded indices.
at::Tensor max_pool_scatter_cpu(const char* op, const at::Tensor& grad_output,
                                const at::Tensor& self, const at::Tensor& indices,
                                const Pool2dGeometry& g, const Pool2dParams* params) {
  check_same_dtype(op, grad_output, "grad_output", self);
  check_same_shape(op, grad_output, "grad_output", {g.batch, g.channels, g.out_h, g.out_w});
  check_indices(op, indices, {g.batch, g.channels, g.out_h, g.out_w}, self);
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor go = grad_output.contiguous(fmt);
  const at::Tensor id = indices.contiguous(fmt);
  // Zeroed by the kernel, plane by plane, just before its scatter.
  at::Tensor grad_input = at::empty(self.sizes(), self.options().memory_format(fmt));
  if (grad_input.numel() == 0 || go.numel() == 0) return grad_input.zero_();
  const PoolLayout L = pool_layout(g, cl);
  // Every output's window: which rows a task's outputs reach, and (max_pool2d with dilation
  // and padding) which windows are empty. params null: adaptive_max_pool2d's windows.
  std::vector<PoolRange> rows, cols;
  if (params != nullptr) {
    rows = max_rows(g, *params);
    cols = max_cols(g, *params);
  } else {
    rows = ranges(g.out_h, [&](int64_t o) { return adaptive_range(o, g.out_h, g.in_h); });
    cols = ranges(g.out_w, [&](int64_t o) { return adaptive_range(o, g.out_w, g.in_w); });
  }
  auto empty = [](const PoolRange& x) { return x.begin >= x.end; };
  const bool any_empty = std::any_of(rows.begin(), rows.end(), empty) ||
                         std::any_of(cols.begin(), cols.end(), empty);
  bool ok = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, self.scalar_type(), "cnnext_max_pool2d_backward_cpu", [&] {
    ok = max_pool_backward<scalar_t>(go.data_ptr<scalar_t>(), id.data_ptr<int64_t>(),
                                     grad_input.data_ptr<scalar_t>(), L, rows.data(), cols.data(),
                                     any_empty);
  });
  TORCH_CHECK(ok, "cnnext.", op, ": indices hold values outside [0, ", g.in_h * g.in_w,
              ") (each index is h * W + w within its plane)");
  return grad_input;
}

namespace {

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& self,
                                   const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry g = check_pool2d(op, self, p);
  return max_pool_scatter_cpu(op, grad_output, self, indices, g, &p);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);
  m.impl("max_pool2d_values", &max_pool2d_values_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
}

}  // namespace cnnext::cpu
