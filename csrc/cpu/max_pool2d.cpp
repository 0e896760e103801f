// CPU max_pool2d (values and flat per-plane indices) and its backward.
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>

#include "../common/pool_shapes.h"
#include "pool2d_kernels.h"

namespace cnnext::cpu {
namespace {

// Taps are uint8 with 255 kept for an empty window.
void check_tap_window(const char* op, const Pool2dParams& p) {
  TORCH_CHECK(p.kernel_h * p.kernel_w <= kMaxTaps, "cnnext.", op, ": a window of ",
              p.kernel_h * p.kernel_w, " elements has more taps than uint8 holds (at most ",
              kMaxTaps, ")");
}

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

// Values and (with_positions) the position of each maximum: flat int64 indices, or uint8
// window taps (Ix = uint8_t); without, the second tensor is undefined.
template <typename Ix>
std::tuple<at::Tensor, at::Tensor> max_pool2d_impl(const char* op, const at::Tensor& self,
                                                   c10::IntArrayRef kernel_size,
                                                   c10::IntArrayRef stride,
                                                   c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode,
                                                   bool with_positions) {
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry g = check_pool2d(op, self, p);
  check_pool_dtype(op, self, PoolDtypes{true, true, true});
  constexpr bool taps = std::is_same<Ix, uint8_t>::value;
  if (taps) check_tap_window(op, p);
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = self.contiguous(fmt);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, self.options().memory_format(fmt));
  at::Tensor positions;
  if (with_positions) {
    positions = at::empty({g.batch, g.channels, g.out_h, g.out_w},
                          self.options().dtype(taps ? at::kByte : at::kLong).memory_format(fmt));
  }
  if (out.numel() == 0) return {out, positions};
  const PoolLayout L = pool_layout(g, cl);
  const auto rows = max_rows(g, p), cols = max_cols(g, p);
  AT_DISPATCH_ALL_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "cnnext_max_pool2d_cpu", [&] {
    max_pool_forward<scalar_t, Ix>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                   with_positions ? positions.data_ptr<Ix>() : nullptr, L, rows,
                                   cols, p.kernel_h * p.kernel_w,
                                   regular_cols(g.in_w, g.out_w, p.kernel_w, p.stride_w, p.pad_w,
                                                p.dilation_w));
  });
  return {out, positions};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& self,
                                                  c10::IntArrayRef kernel_size,
                                                  c10::IntArrayRef stride,
                                                  c10::IntArrayRef padding,
                                                  c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_impl<int64_t>("max_pool2d", self, kernel_size, stride, padding, dilation,
                                  ceil_mode, true);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_taps_cpu(const at::Tensor& self,
                                                       c10::IntArrayRef kernel_size,
                                                       c10::IntArrayRef stride,
                                                       c10::IntArrayRef padding,
                                                       c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_impl<uint8_t>("max_pool2d_taps", self, kernel_size, stride, padding,
                                  dilation, ceil_mode, true);
}

at::Tensor max_pool2d_values_cpu(const at::Tensor& self, c10::IntArrayRef kernel_size,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_impl<int64_t>("max_pool2d", self, kernel_size, stride, padding,
                                              dilation, ceil_mode, false));
}

// grad_input in self's layout: grad_output added at the positions a forward recorded (int64
// flat indices or uint8 taps, Ix), over the windows rows x cols; *ok false if a position of a
// non-empty window lies outside it (never written).
template <typename Ix>
at::Tensor add_at_positions(const at::Tensor& grad_output, const at::Tensor& self,
                            const at::Tensor& positions, const Pool2dGeometry& g,
                            const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                            int64_t kernel_w, bool* ok) {
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor go = grad_output.contiguous(fmt);
  const at::Tensor pos = positions.contiguous(fmt);
  // Zeroed (or gathered into) by the kernel, plane by plane.
  at::Tensor grad_input = at::empty(self.sizes(), self.options().memory_format(fmt));
  *ok = true;
  if (grad_input.numel() == 0 || go.numel() == 0) return grad_input.zero_();
  const PoolLayout L = pool_layout(g, cl);
  auto empty = [](const PoolRange& x) { return x.begin >= x.end; };
  const bool any_empty = std::any_of(rows.begin(), rows.end(), empty) ||
                         std::any_of(cols.begin(), cols.end(), empty);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, self.scalar_type(), "cnnext_max_pool2d_backward_cpu", [&] {
    *ok = max_pool_backward<scalar_t, Ix>(go.data_ptr<scalar_t>(), pos.data_ptr<Ix>(),
                                          grad_input.data_ptr<scalar_t>(), L, rows.data(),
                                          cols.data(), any_empty, kernel_w);
  });
  return grad_input;
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
  bool ok = true;
  at::Tensor grad_input = add_at_positions<int64_t>(grad_output, self, indices, g, rows, cols, 0, &ok);
  TORCH_CHECK(ok, "cnnext.", op, ": indices hold values outside [0, ", g.in_h * g.in_w,
              ") (each index is h * W + w within its plane)");
  return grad_input;
}

namespace {

// max_pool2d_taps' backward: grad_output added at each window's tap.
at::Tensor max_pool2d_taps_backward_cpu(const at::Tensor& grad_output, const at::Tensor& self,
                                        const at::Tensor& taps, c10::IntArrayRef kernel_size,
                                        c10::IntArrayRef stride, c10::IntArrayRef padding,
                                        c10::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_taps_backward";
  const Pool2dParams p = make_pool2d_params(op, kernel_size, stride, padding, dilation, ceil_mode);
  const Pool2dGeometry g = check_pool2d(op, self, p);
  check_tap_window(op, p);
  check_same_dtype(op, grad_output, "grad_output", self);
  check_same_shape(op, grad_output, "grad_output", {g.batch, g.channels, g.out_h, g.out_w});
  check_same_shape(op, taps, "taps", {g.batch, g.channels, g.out_h, g.out_w});
  TORCH_CHECK(taps.scalar_type() == at::kByte, "cnnext.", op,
              ": expected taps of dtype Byte, but got ", taps.scalar_type());
  TORCH_CHECK(taps.device() == self.device(), "cnnext.", op, ": expected taps on ",
              self.device(), ", but got ", taps.device());
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  bool ok = true;
  at::Tensor grad_input = add_at_positions<uint8_t>(grad_output, self, taps, g, max_rows(g, p),
                                                    max_cols(g, p), p.kernel_w, &ok);
  TORCH_CHECK(ok, "cnnext.", op, ": taps hold values outside their windows (each tap is "
              "r * kernel_w + s within its clipped window, 255 only for an empty window)");
  return grad_input;
}

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
  m.impl("max_pool2d_taps", &max_pool2d_taps_cpu);
  m.impl("max_pool2d_taps_backward", &max_pool2d_taps_backward_cpu);
}

}  // namespace cnnext::cpu
