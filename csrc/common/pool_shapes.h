#pragma once
// Argument checks, output sizes and window bounds for the pooling operators: the one place
// these rules live, used by the CPU and CUDA kernels alike. Checks run in torch's order with
// torch's wording (ATen native/Pool.h, AdaptivePooling.h), prefixed "cnnext.<op>: ".
#include <torch/types.h>

#include "pool_windows.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

namespace cnnext {

// ---- window parameters ------------------------------------------------------------------
struct Pool2dParams {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool ceil_mode;
};

struct Pool2dGeometry {
  int64_t batch, channels, in_h, in_w, out_h, out_w;
};

inline std::array<int64_t, 2> pool_pair(const char* op, c10::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "cnnext.", op, ": ", name,
              " must either be a single int, or a tuple of two ints, but got ", name, "=", v);
  return {v[0], v.size() == 1 ? v[0] : v[1]};
}

inline Pool2dParams make_pool2d_params(const char* op, c10::IntArrayRef kernel_size,
                                       c10::IntArrayRef stride, c10::IntArrayRef padding,
                                       c10::IntArrayRef dilation, bool ceil_mode) {
  const auto k = pool_pair(op, kernel_size, "kernel_size");
  // An empty stride means stride = kernel_size, as in torch's schema.
  const auto s = stride.empty() ? k : pool_pair(op, stride, "stride");
  const auto p = pool_pair(op, padding, "padding");
  const auto d = pool_pair(op, dilation, "dilation");
  return Pool2dParams{k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], ceil_mode};
}

// torch's div_rtn: division rounding towards negative infinity.
inline int64_t div_floor(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Output size along one dimension, with torch's checks on (stride, pad, kernel, dilation).
// ceil_mode: the last window must start inside the input or the left padding, else it is
// dropped (applied even with zero padding).
inline int64_t pool_output_size(const char* op, int64_t in, int64_t kernel, int64_t pad,
                                int64_t stride, int64_t dilation, bool ceil_mode) {
  TORCH_CHECK(stride != 0, "cnnext.", op, ": stride should not be zero");
  TORCH_CHECK(pad >= 0, "cnnext.", op, ": pad must be non-negative, but got pad: ", pad);
  TORCH_CHECK(pad <= ((kernel - 1) * dilation + 1) / 2, "cnnext.", op,
              ": pad should be at most half of effective kernel size, but got pad=", pad,
              ", kernel_size=", kernel, " and dilation=", dilation);
  int64_t out = div_floor(in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0),
                          stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

inline void check_pool2d_rank(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "cnnext.", op,
              ": expected a 4D (N, C, H, W) tensor for input (3D input is batched in Python), "
              "but got input of size: ", input.sizes());
}

// torch's pool2d_shape_check, after the output sizes were computed.
inline void pool2d_shape_check(const char* op, const at::Tensor& input, const Pool2dParams& p,
                               int64_t out_h, int64_t out_w) {
  TORCH_CHECK(p.kernel_w > 0 && p.kernel_h > 0, "cnnext.", op,
              ": kernel size should be greater than zero, but got kH: ", p.kernel_h,
              " kW: ", p.kernel_w);
  TORCH_CHECK(p.stride_w > 0 && p.stride_h > 0, "cnnext.", op,
              ": stride should be greater than zero, but got dH: ", p.stride_h,
              " dW: ", p.stride_w);
  TORCH_CHECK(p.dilation_h > 0 && p.dilation_w > 0, "cnnext.", op,
              ": dilation should be greater than zero, but got dilationH: ", p.dilation_h,
              " dilationW: ", p.dilation_w);
  TORCH_CHECK(input.size(1) != 0 && input.size(2) != 0 && input.size(3) != 0, "cnnext.", op,
              ": Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for "
              "input, but got:", input.sizes());
  // The plain (undilated) kernel bounds the padding, as the installed torch checks.
  TORCH_CHECK(p.kernel_w / 2 >= p.pad_w && p.kernel_h / 2 >= p.pad_h, "cnnext.", op,
              ": pad should be smaller than or equal to half of kernel size, but got padW = ",
              p.pad_w, ", padH = ", p.pad_h, ", kW = ", p.kernel_w, ", kH = ", p.kernel_h);
  TORCH_CHECK(out_w >= 1 && out_h >= 1, "cnnext.", op, ": Given input size: (", input.size(1),
              "x", input.size(2), "x", input.size(3), "). Calculated output size: (",
              input.size(1), "x", out_h, "x", out_w, "). Output size is too small");
}

// All checks of max_pool2d / avg_pool2d (avg passes dilation 1); returns the geometry.
inline Pool2dGeometry check_pool2d(const char* op, const at::Tensor& input, const Pool2dParams& p) {
  check_pool2d_rank(op, input);
  Pool2dGeometry g;
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.in_h = input.size(2);
  g.in_w = input.size(3);
  g.out_h = pool_output_size(op, g.in_h, p.kernel_h, p.pad_h, p.stride_h, p.dilation_h, p.ceil_mode);
  g.out_w = pool_output_size(op, g.in_w, p.kernel_w, p.pad_w, p.stride_w, p.dilation_w, p.ceil_mode);
  pool2d_shape_check(op, input, p, g.out_h, g.out_w);
  return g;
}

inline void check_divisor(const char* op, c10::optional<int64_t> divisor_override) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, "cnnext.", op,
              ": divisor must be not zero (divisor_override=0)");
}

// Dtypes: max pooling takes every real type but bool; average pooling floating types and
// int64 (integer division, as torch's CPU kernel); adaptive pools and every backward take
// floating types only. Half types are optional per device (the CPU computes them in float32
// in Python). Same exception class as torch's dispatch (NotImplementedError).
struct PoolDtypes {
  bool integers;  // every integer type
  bool int64;     // int64 only
  bool half;      // float16 and bfloat16
};

inline void check_pool_dtype(const char* op, const at::Tensor& t, PoolDtypes allowed) {
  const auto st = t.scalar_type();
  const bool ok = st == at::kFloat || st == at::kDouble ||
                  (allowed.half && (st == at::kHalf || st == at::kBFloat16)) ||
                  (allowed.int64 && st == at::kLong) ||
                  (allowed.integers && at::isIntegralType(st, /*includeBool=*/false));
  TORCH_CHECK_NOT_IMPLEMENTED(ok, "cnnext.", op, ": \"", op, "\" not implemented for '",
                              c10::toString(st), "'");
}

// Backward inputs must match the forward's geometry (these ops are public, so they are
// checked rather than trusted).
inline void check_same_shape(const char* op, const at::Tensor& t, const char* name,
                             c10::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "cnnext.", op, ": expected ", name, " of size ", expected,
              ", but got ", name, " of size ", t.sizes());
}

inline void check_same_dtype(const char* op, const at::Tensor& t, const char* name,
                             const at::Tensor& self) {
  TORCH_CHECK(t.scalar_type() == self.scalar_type(), "cnnext.", op, ": expected ", name,
              " to have dtype ", self.scalar_type(), ", but got ", t.scalar_type());
  TORCH_CHECK(t.device() == self.device(), "cnnext.", op, ": expected ", name, " on ",
              self.device(), ", but got ", t.device());
}

inline void check_indices(const char* op, const at::Tensor& indices, c10::IntArrayRef expected,
                          const at::Tensor& self) {
  check_same_shape(op, indices, "indices", expected);
  TORCH_CHECK(indices.scalar_type() == at::kLong, "cnnext.", op,
              ": expected indices of dtype Long, but got ", indices.scalar_type());
  TORCH_CHECK(indices.device() == self.device(), "cnnext.", op, ": expected indices on ",
              self.device(), ", but got ", indices.device());
}

// ---- windows: PoolRange, max_pool_range, avg_pool_range, adaptive_range, avg_pool_divisor
// live in pool_windows.h (torch-free, shared with the CUDA kernels).

// ---- adaptive pooling checks ----------------------------------------------------------------
// torch's order differs between the two: adaptive average pooling checks output_size first,
// adaptive max pooling the input first (and reports a negative size as its allocation does).
inline Pool2dGeometry check_adaptive_pool2d(const char* op, const at::Tensor& input,
                                            c10::IntArrayRef output_size, bool max) {
  if (!max) {
    TORCH_CHECK(output_size.size() == 2, "cnnext.", op,
                ": output_size must be 2, but got output_size=", output_size);
    TORCH_CHECK(output_size[0] >= 0 && output_size[1] >= 0, "cnnext.", op,
                ": elements of output_size must be greater than or equal to 0 but received {",
                output_size[0], ", ", output_size[1], "}");
  }
  TORCH_CHECK(input.dim() == 4, "cnnext.", op,
              "(): Expected a 4D (N, C, H, W) tensor (3D input is batched in Python), but got ",
              input.sizes());
  // adaptive max rejects empty channels too (torch: every non-batch dimension).
  for (int64_t i = max ? 1 : 2; i < 4; ++i) {
    TORCH_CHECK(input.size(i) > 0, "cnnext.", op,
                "(): Expected input to have non-zero size for non-batch dimensions, but input "
                "has sizes ", input.sizes(), " with dimension ", i, " being empty");
  }
  if (max) {
    TORCH_CHECK(output_size.size() == 2, "cnnext.", op,
                "(): internal error: output_size.size() must be 2 (output_size=", output_size, ")");
    for (int64_t v : output_size) {
      TORCH_CHECK(v >= 0, "cnnext.", op, ": Trying to create tensor with negative dimension ", v,
                  ": [", input.size(0), ", ", input.size(1), ", ", output_size[0], ", ",
                  output_size[1], "]");
    }
  }
  return Pool2dGeometry{input.size(0), input.size(1), input.size(2), input.size(3),
                        output_size[0], output_size[1]};
}

}  // namespace cnnext
