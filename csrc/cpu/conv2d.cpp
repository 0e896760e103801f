// CPU conv2d: im2col + our GEMM, one image at a time, so the column workspace is bounded by
// one image's columns whatever the batch. Images run in parallel when the batch can feed every
// thread (each thread with its own workspace); otherwise the GEMM parallelises inside.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <vector>

#include "../common/conv_shapes.h"
#include "gemm/gemm.h"
#include "im2col.h"

namespace cnnext::cpu {
namespace {

ColShape col_shape(const Conv2dGeometry& g, const Conv2dParams& p) {
  return ColShape{g.in_channels, g.in_h, g.in_w, g.kernel_h, g.kernel_w,
                  p.padding[0], p.padding[1], p.stride[0], p.stride[1],
                  p.dilation[0], p.dilation[1], g.out_h, g.out_w};
}

// 1x1, stride 1, no padding: the image itself is the column matrix.
bool is_pointwise(const Conv2dGeometry& g, const Conv2dParams& p) {
  return g.kernel_h == 1 && g.kernel_w == 1 && p.stride[0] == 1 && p.stride[1] == 1 &&
         p.padding[0] == 0 && p.padding[1] == 0;
}

Conv2dParams make_params(c10::IntArrayRef stride, c10::IntArrayRef padding,
                         c10::IntArrayRef dilation, int64_t groups) {
  return Conv2dParams{to_pair(stride, "stride"), to_pair(padding, "padding"),
                      to_pair(dilation, "dilation"), groups};
}

void check_cpu_dtype(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "cnnext.conv2d: expected a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "cnnext.conv2d: input dtype ", t.scalar_type(),
              " is not supported on CPU (float32 and float64 are)");
}

// Runs body(n, workspace) for every image n. Parallel over images when the batch is at least
// the thread count; each call's arithmetic is the same either way, so results do not depend
// on the thread count.
template <typename T, typename Body>
void for_each_image(int64_t batch, int64_t workspace_elems, const Body& body) {
  const int64_t threads = at::get_num_threads();
  if (batch >= threads && threads > 1) {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> ws(static_cast<size_t>(workspace_elems));
      for (int64_t n = begin; n < end; ++n) body(n, ws.data());
    });
  } else {
    std::vector<T> ws(static_cast<size_t>(workspace_elems));
    for (int64_t n = 0; n < batch; ++n) body(n, ws.data());
  }
}

at::Tensor conv2d_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                      const c10::optional<at::Tensor>& bias_, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = make_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, bias_, p);
  check_cpu_dtype(input_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (output.numel() == 0) return output;
  if (g.col_rows() == 0) {  // no input channels: the output is the bias alone
    output.zero_();
    if (has_bias) output.add_(bias.view({-1, 1, 1}));
    return output;
  }

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_conv2d_cpu", [&] {
    const ColShape cs = col_shape(g, p);
    const bool pointwise = is_pointwise(g, p);
    const int64_t P = g.out_plane();
    const int64_t rows = g.col_rows();
    const int64_t cout_g = g.out_channels_per_group();
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    const scalar_t* b = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    const int64_t ws_elems = pointwise ? 0 : rows * g.groups * P;
    for_each_image<scalar_t>(g.batch, ws_elems, [&](int64_t n, scalar_t* col) {
      const scalar_t* image = in + n * g.in_channels * g.in_plane();
      scalar_t* out_n = out + n * g.out_channels * P;
      const scalar_t* cols = image;
      if (!pointwise) {
        im2col(image, cs, col);
        cols = col;
      }
      scalar_t beta = 0;
      if (b != nullptr) {  // bias pre-filled, then the GEMM accumulates onto it
        for (int64_t oc = 0; oc < g.out_channels; ++oc)
          std::fill(out_n + oc * P, out_n + (oc + 1) * P, b[oc]);
        beta = 1;
      }
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        gemm<scalar_t>(false, false, cout_g, P, rows, scalar_t(1), w + gi * cout_g * rows, rows,
                       cols + gi * rows * P, P, beta, out_n + gi * cout_g * P, P);
      }
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, c10::nullopt, p);
  check_cpu_dtype(input_);
  TORCH_CHECK(grad_output_.dim() == 4 && grad_output_.size(0) == g.batch &&
                  grad_output_.size(1) == g.out_channels && grad_output_.size(2) == g.out_h &&
                  grad_output_.size(3) == g.out_w,
              "cnnext.conv2d_backward: expected grad_output of size [", g.batch, ", ",
              g.out_channels, ", ", g.out_h, ", ", g.out_w, "], but got ", grad_output_.sizes());
  TORCH_CHECK(grad_output_.scalar_type() == input_.scalar_type(),
              "cnnext.conv2d_backward: grad_output type (", grad_output_.scalar_type(),
              ") and input type (", input_.scalar_type(), ") should be the same");
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  // Unselected results are empty (0-element) tensors: custom ops return defined tensors.
  at::Tensor grad_input = at::empty({0}, input_.options());
  at::Tensor grad_weight = at::empty({0}, weight_.options());
  at::Tensor grad_bias = at::empty({0}, weight_.options());
  if (output_mask[0]) grad_input = at::empty(input_.sizes(), input_.options());
  if (output_mask[1]) grad_weight = at::zeros(weight_.sizes(), weight_.options());
  if (output_mask[2]) grad_bias = at::empty({g.out_channels}, weight_.options());
  // grad_weight needs the input's columns; only then is the input made contiguous.
  const at::Tensor input = output_mask[1] ? input_.contiguous() : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(input_.scalar_type(), "cnnext_conv2d_backward_cpu", [&] {
    const ColShape cs = col_shape(g, p);
    const bool pointwise = is_pointwise(g, p);
    const int64_t P = g.out_plane();
    const int64_t rows = g.col_rows();
    const int64_t cout_g = g.out_channels_per_group();
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();

    if (output_mask[0] && grad_input.numel() > 0) {
      scalar_t* gi = grad_input.data_ptr<scalar_t>();
      if (g.col_rows() == 0 || g.out_channels == 0 || P == 0) {
        grad_input.zero_();
      } else {
        const int64_t ws_elems = pointwise ? 0 : rows * g.groups * P;
        for_each_image<scalar_t>(g.batch, ws_elems, [&](int64_t n, scalar_t* col) {
          const scalar_t* go_n = go + n * g.out_channels * P;
          scalar_t* gi_n = gi + n * g.in_channels * g.in_plane();
          scalar_t* cols = pointwise ? gi_n : col;
          for (int64_t k = 0; k < g.groups; ++k) {
            gemm<scalar_t>(true, false, rows, P, cout_g, scalar_t(1), w + k * cout_g * rows,
                           rows, go_n + k * cout_g * P, P, scalar_t(0), cols + k * rows * P, P);
          }
          if (!pointwise) col2im(col, cs, gi_n);
        });
      }
    }

    if (output_mask[1] && grad_weight.numel() > 0 && g.batch > 0 && P > 0) {
      const scalar_t* in = input.data_ptr<scalar_t>();
      scalar_t* gw = grad_weight.data_ptr<scalar_t>();
      std::vector<scalar_t> col(pointwise ? 0 : static_cast<size_t>(rows * g.groups * P));
      // Images in order, each GEMM accumulating into grad_weight: a fixed summation order.
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* image = in + n * g.in_channels * g.in_plane();
        const scalar_t* cols = image;
        if (!pointwise) {
          im2col(image, cs, col.data());
          cols = col.data();
        }
        const scalar_t* go_n = go + n * g.out_channels * P;
        for (int64_t k = 0; k < g.groups; ++k) {
          gemm<scalar_t>(false, true, cout_g, rows, P, scalar_t(1), go_n + k * cout_g * P, P,
                         cols + k * rows * P, P, scalar_t(1), gw + k * cout_g * rows, rows);
        }
      }
    }

    if (output_mask[2]) {
      scalar_t* gb = grad_bias.data_ptr<scalar_t>();
      at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
        for (int64_t oc = begin; oc < end; ++oc) {
          scalar_t acc = 0;
          for (int64_t n = 0; n < g.batch; ++n) {
            const scalar_t* row = go + (n * g.out_channels + oc) * P;
            scalar_t s = 0;
            for (int64_t i = 0; i < P; ++i) s += row[i];
            acc += s;
          }
          gb[oc] = acc;
        }
      });
    }
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("conv2d", &conv2d_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace cnnext::cpu
