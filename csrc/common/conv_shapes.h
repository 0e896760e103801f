#pragma once
// Argument checks and output sizes for conv2d: the one place these rules live.
// Used by the CPU and CUDA kernels alike. Messages follow torch's wording and name the argument.
#include <torch/types.h>

#include <array>
#include <cstdint>

namespace cnnext {

struct Conv2dParams {
  std::array<int64_t, 2> stride;
  std::array<int64_t, 2> padding;
  std::array<int64_t, 2> dilation;
  int64_t groups;
};

struct Conv2dGeometry {
  int64_t batch, in_channels, in_h, in_w;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t groups;
  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  // Rows of the im2col matrix of one group: C_in/groups * kh * kw.
  int64_t col_rows() const { return in_channels_per_group() * kernel_h * kernel_w; }
  int64_t out_plane() const { return out_h * out_w; }
  int64_t in_plane() const { return in_h * in_w; }
  int64_t input_numel() const { return batch * in_channels * in_plane(); }
  int64_t output_numel() const { return batch * out_channels * out_plane(); }
};

inline std::array<int64_t, 2> to_pair(c10::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "cnnext.conv2d: expected ", name,
              " to be a single integer value or a list of 2 values, but got ", name, "=", v);
  return v.size() == 1 ? std::array<int64_t, 2>{v[0], v[0]} : std::array<int64_t, 2>{v[0], v[1]};
}

inline Conv2dParams make_conv2d_params(c10::IntArrayRef stride, c10::IntArrayRef padding,
                                       c10::IntArrayRef dilation, int64_t groups) {
  return Conv2dParams{to_pair(stride, "stride"), to_pair(padding, "padding"),
                      to_pair(dilation, "dilation"), groups};
}

inline int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

// Validates the arguments (torch's rules and messages) and returns the geometry.
// Checks run in the order of torch's _convolution / check_shape_forward and its backend
// choice, so the first error reported is torch's. Argument checks torch makes before these
// (bias dtype, input rank, weight rank, argument lengths) are in cnnext/_checks.py.
inline Conv2dGeometry check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                                   const c10::optional<at::Tensor>& bias,
                                   const Conv2dParams& p) {
  TORCH_CHECK(input.dim() == 4,
              "cnnext.conv2d: expected 4D (batched) input, but got input of size: ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 4, "cnnext.conv2d: expected 4D weight, but got weight of size: ",
              weight.sizes());
  TORCH_CHECK(p.groups > 0, "cnnext.conv2d: non-positive groups is not supported (groups=",
              p.groups, ")");
  const auto any_of = [](const std::array<int64_t, 2>& v, auto bad) { return bad(v[0]) || bad(v[1]); };
  TORCH_CHECK(!any_of(p.padding, [](int64_t v) { return v < 0; }),
              "cnnext.conv2d: negative padding is not supported (padding=",
              c10::IntArrayRef(p.padding), ")");
  TORCH_CHECK(!any_of(p.stride, [](int64_t v) { return v <= 0; }),
              "cnnext.conv2d: non-positive stride is not supported (stride=",
              c10::IntArrayRef(p.stride), ")");
  TORCH_CHECK(!any_of(p.dilation, [](int64_t v) { return v < 0; }),
              "cnnext.conv2d: dilation should be greater than zero (dilation=",
              c10::IntArrayRef(p.dilation), ")");
  TORCH_CHECK(weight.size(0) >= p.groups,
              "cnnext.conv2d: Given groups=", p.groups,
              ", expected weight to be at least ", p.groups, " at dimension 0, but got weight of size ",
              weight.sizes(), " instead");
  // torch prints this weight size in double brackets; kept word for word.
  TORCH_CHECK(weight.size(0) % p.groups == 0, "cnnext.conv2d: Given groups=", p.groups,
              ", expected weight to be divisible by ", p.groups,
              " at dimension 0, but got weight of size [", weight.sizes(), "] instead");
  TORCH_CHECK(input.size(1) == weight.size(1) * p.groups, "cnnext.conv2d: Given groups=",
              p.groups, ", weight of size ", weight.sizes(), ", expected input", input.sizes(),
              " to have ", weight.size(1) * p.groups, " channels, but got ", input.size(1),
              " channels instead");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "cnnext.conv2d: Given weight of size ", weight.sizes(),
                ", expected bias to be 1-dimensional with ", weight.size(0),
                " elements, but got bias of size ", bias->sizes(), " instead");
  }
  {
    const int64_t padded_h = input.size(2) + 2 * p.padding[0];
    const int64_t padded_w = input.size(3) + 2 * p.padding[1];
    const int64_t eff_kh = p.dilation[0] * (weight.size(2) - 1) + 1;
    const int64_t eff_kw = p.dilation[1] * (weight.size(3) - 1) + 1;
    TORCH_CHECK(padded_h >= eff_kh && padded_w >= eff_kw,
                "cnnext.conv2d: Calculated padded input size per channel: (", padded_h, " x ",
                padded_w, "). Kernel size: (", eff_kh, " x ", eff_kw,
                "). Kernel size can't be greater than actual input size");
  }
  TORCH_CHECK(weight.size(2) > 0 && weight.size(3) > 0,
              "cnnext.conv2d: kernel size should be greater than zero, but got kernel_height: ",
              weight.size(2), " kernel_width: ", weight.size(3), " (weight of size ",
              weight.sizes(), ")");
  // torch runs no backend (and so makes none of the checks below) when the batch or the
  // channels are empty.
  const bool empty = input.size(0) == 0 || input.size(1) == 0;
  TORCH_CHECK(empty || (p.dilation[0] > 0 && p.dilation[1] > 0),
              "cnnext.conv2d: non-positive dilation is not supported (dilation=",
              c10::IntArrayRef(p.dilation), ")");
  TORCH_CHECK(empty || (input.size(2) > 0 && input.size(3) > 0),
              "cnnext.conv2d: Only zero batch or zero channel inputs are supported, but got "
              "input shape: ", input.sizes());
  TORCH_CHECK(input.device() == weight.device(), "cnnext.conv2d: input (", input.device(),
              ") and weight (", weight.device(), ") must be on the same device");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), "cnnext.conv2d: Input type (",
              input.scalar_type(), ") and weight type (", weight.scalar_type(),
              ") should be the same");
  if (has_bias) {
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), "cnnext.conv2d: Input type (",
                input.scalar_type(), ") and bias type (", bias->scalar_type(),
                ") should be the same");
    TORCH_CHECK(bias->device() == input.device(), "cnnext.conv2d: input (", input.device(),
                ") and bias (", bias->device(), ") must be on the same device");
  }
  Conv2dGeometry g;
  g.batch = input.size(0);
  g.in_channels = input.size(1);
  g.in_h = input.size(2);
  g.in_w = input.size(3);
  g.out_channels = weight.size(0);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.groups = p.groups;
  g.out_h = conv_output_size(g.in_h, g.kernel_h, p.stride[0], p.padding[0], p.dilation[0]);
  g.out_w = conv_output_size(g.in_w, g.kernel_w, p.stride[1], p.padding[1], p.dilation[1]);
  // Guard the products the kernels form: every element count must fit in int64.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  auto fits = [&](std::initializer_list<int64_t> dims) {
    int64_t acc = 1;
    for (int64_t d : dims) {
      if (d != 0 && acc > kMax / d) return false;
      acc *= d;
    }
    return true;
  };
  TORCH_CHECK(fits({g.batch, g.out_channels, g.out_h, g.out_w}) &&
                  fits({g.col_rows(), g.out_h, g.out_w}),
              "cnnext.conv2d: output or workspace size overflows int64 (input ", input.sizes(),
              ", weight ", weight.sizes(), ")");
  return g;
}

// conv2d_backward's grad_output must be the forward output's shape, dtype and device.
inline void check_conv2d_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                                     const Conv2dGeometry& g) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.batch &&
                  grad_output.size(1) == g.out_channels && grad_output.size(2) == g.out_h &&
                  grad_output.size(3) == g.out_w,
              "cnnext.conv2d_backward: expected grad_output of size [", g.batch, ", ",
              g.out_channels, ", ", g.out_h, ", ", g.out_w, "], but got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "cnnext.conv2d_backward: grad_output type (", grad_output.scalar_type(),
              ") and input type (", input.scalar_type(), ") should be the same");
  TORCH_CHECK(grad_output.device() == input.device(), "cnnext.conv2d_backward: grad_output (",
              grad_output.device(), ") and input (", input.device(),
              ") must be on the same device");
}

}  // namespace cnnext
