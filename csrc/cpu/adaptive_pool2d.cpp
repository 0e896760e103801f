// CPU adaptive average and adaptive max pooling, forward and backward.
#include <torch/library.h>
#include <torch/types.h>

#include <tuple>

#include "../common/pool_shapes.h"
#include "pool2d_kernels.h"

namespace cnnext::cpu {

at::Tensor max_pool_scatter_cpu(const char* op, const at::Tensor& grad_output,
                                const at::Tensor& self, const at::Tensor& indices,
                                const Pool2dGeometry& g,
                                const Pool2dParams* params);  // max_pool2d.cpp

namespace {

std::vector<PoolRange> adaptive_rows(const Pool2dGeometry& g) {
  return ranges(g.out_h, [&](int64_t o) { return adaptive_range(o, g.out_h, g.in_h); });
}
std::vector<PoolRange> adaptive_cols(const Pool2dGeometry& g) {
  return ranges(g.out_w, [&](int64_t o) { return adaptive_range(o, g.out_w, g.in_w); });
}

bool is_identity(const Pool2dGeometry& g) { return g.out_h == g.in_h && g.out_w == g.in_w; }

// Largest window along one dimension (work estimate for the parallel grain).
int64_t max_window(int64_t in, int64_t out) { return out > 0 ? (in + out - 1) / out + 1 : 1; }

at::Tensor adaptive_avg_pool2d_cpu(const at::Tensor& self, c10::IntArrayRef output_size) {
  const char* op = "adaptive_avg_pool2d";
  const Pool2dGeometry g = check_adaptive_pool2d(op, self, output_size, /*max=*/false);
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = self.contiguous(fmt);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, self.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  // Output size = input size (AlexNet's 6x6 and VGG's 7x7 heads at 224²): every window is one
  // element, whose average is itself exactly.
  if (is_identity(g)) return out.copy_(input);
  auto divisor = [](const PoolRange& rh, const PoolRange& rw) { return rh.extent * rw.extent; };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "cnnext_adaptive_avg_pool2d_cpu", [&] {
    avg_pool_forward<scalar_t>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                               pool_layout(g, cl), adaptive_rows(g), adaptive_cols(g),
                               max_window(g.in_h, g.out_h) * max_window(g.in_w, g.out_w),
                               divisor);
  });
  return out;
}

at::Tensor adaptive_avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& self) {
  const char* op = "adaptive_avg_pool2d_backward";
  TORCH_CHECK(grad_output.dim() == 4, "cnnext.", op,
              ": expected a 4D grad_output, but got grad_output of size ", grad_output.sizes());
  const Pool2dGeometry g = check_adaptive_pool2d(
      op, self, {grad_output.size(2), grad_output.size(3)}, /*max=*/false);
  check_same_dtype(op, grad_output, "grad_output", self);
  check_same_shape(op, grad_output, "grad_output", {g.batch, g.channels, g.out_h, g.out_w});
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor go = grad_output.contiguous(fmt);
  // Zeroed by the kernel, plane by plane, just before its scatter.
  at::Tensor grad_input = at::empty(self.sizes(), self.options().memory_format(fmt));
  if (grad_input.numel() == 0 || go.numel() == 0) return grad_input.zero_();
  if (is_identity(g)) return grad_input.copy_(go);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, self.scalar_type(), "cnnext_adaptive_avg_pool2d_backward_cpu", [&] {
    // torch divides by each extent in turn; kept for bit-identical gradients.
    auto share = [](scalar_t g_out, const PoolRange& rh, const PoolRange& rw) {
      using A = at::opmath_type<scalar_t>;
      return static_cast<scalar_t>(static_cast<A>(g_out) / static_cast<A>(rh.extent) /
                                   static_cast<A>(rw.extent));
    };
    avg_pool_backward<scalar_t>(go.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
                                pool_layout(g, cl), adaptive_rows(g), adaptive_cols(g), share);
  });
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d_cpu(const at::Tensor& self,
                                                           c10::IntArrayRef output_size) {
  const char* op = "adaptive_max_pool2d";
  const Pool2dGeometry g = check_adaptive_pool2d(op, self, output_size, /*max=*/true);
  check_pool_dtype(op, self, PoolDtypes{false, false, true});
  const bool cl = wants_channels_last(self);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = self.contiguous(fmt);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, self.options().memory_format(fmt));
  at::Tensor ind = at::empty({g.batch, g.channels, g.out_h, g.out_w},
                             self.options().dtype(at::kLong).memory_format(fmt));
  if (out.numel() == 0) return {out, ind};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "cnnext_adaptive_max_pool2d_cpu", [&] {
    max_pool_forward<scalar_t>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                               ind.data_ptr<int64_t>(), pool_layout(g, cl), adaptive_rows(g),
                               adaptive_cols(g),
                               max_window(g.in_h, g.out_h) * max_window(g.in_w, g.out_w));
  });
  return {out, ind};
}

at::Tensor adaptive_max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& self,
                                            const at::Tensor& indices) {
  const char* op = "adaptive_max_pool2d_backward";
  TORCH_CHECK(grad_output.dim() == 4, "cnnext.", op,
              ": expected a 4D grad_output, but got grad_output of size ", grad_output.sizes());
  const Pool2dGeometry g = check_adaptive_pool2d(
      op, self, {grad_output.size(2), grad_output.size(3)}, /*max=*/true);
  return max_pool_scatter_cpu(op, grad_output, self, indices, g, nullptr);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d_cpu);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward_cpu);
  m.impl("adaptive_max_pool2d", &adaptive_max_pool2d_cpu);
  m.impl("adaptive_max_pool2d_backward", &adaptive_max_pool2d_backward_cpu);
}

}  // namespace cnnext::cpu
