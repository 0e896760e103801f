// CUDA conv2d operators: argument checks (csrc/common/conv_shapes.h), layouts, and launches of
// the kernels in conv2d_*.cu. Everything runs on the current stream of the input's device.
// Results are NCHW-contiguous, as on the CPU (the fake kernels in cnnext/ops.py assume it).
#include <ATen/Context.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/conv_shapes.h"
#include "conv2d_launch.h"
#include "cuda_binding_utils.h"

namespace cnnext::cuda {
namespace {

void check_cuda(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.is_cuda(), "cnnext.conv2d: expected ", what, " to be a CUDA tensor, got ",
              t.device());
}

bool is_depthwise(const Conv2dGeometry& g) {
  return g.groups > 1 && g.in_channels == g.groups;
}

void check_groups_grid(const Conv2dGeometry& g) {
  TORCH_CHECK(is_depthwise(g) || g.groups <= 65535,
              "cnnext.conv2d: groups > 65535 is only supported for depthwise convolutions on CUDA"
              " (groups=", g.groups, ")");
}

// weight [Cout][Cin_g][KH][KW] -> [Cout][KH][KW][Cin_g]: the forward filter (rows contiguous in K).
at::Tensor forward_filter(const at::Tensor& weight) {
  return weight.permute({0, 2, 3, 1}).contiguous();
}

// weight -> [G][Cin_g][KH][KW][Cout_g]: the grad_input filter.
at::Tensor dgrad_filter(const at::Tensor& weight, int64_t groups) {
  const int64_t cout = weight.size(0), cin_g = weight.size(1);
  return weight.reshape({groups, cout / groups, cin_g, weight.size(2), weight.size(3)})
      .permute({0, 2, 3, 4, 1})
      .contiguous();
}

ImplicitGemmArgs gemm_args(const Conv2dGeometry& g, const Conv2dParams& p) {
  ImplicitGemmArgs a{};
  a.kernel_h = g.kernel_h; a.kernel_w = g.kernel_w;
  a.stride_h = p.stride[0]; a.stride_w = p.stride[1];
  a.pad_h = p.padding[0]; a.pad_w = p.padding[1];
  a.dil_h = p.dilation[0]; a.dil_w = p.dilation[1];
  a.groups = g.groups;
  a.batch = g.batch;
  return a;
}

void set_out(ImplicitGemmArgs& a, const at::Tensor& out) {
  a.out = out.data_ptr();
  a.out_sn = out.stride(0); a.out_sc = out.stride(1);
  a.out_sh = out.stride(2); a.out_sw = out.stride(3);
}

DepthwiseArgs depthwise_args(const Conv2dGeometry& g, const Conv2dParams& p) {
  DepthwiseArgs a{};
  a.batch = g.batch; a.in_c = g.in_channels; a.in_h = g.in_h; a.in_w = g.in_w;
  a.out_c = g.out_channels; a.out_h = g.out_h; a.out_w = g.out_w;
  a.kernel_h = g.kernel_h; a.kernel_w = g.kernel_w;
  a.stride_h = p.stride[0]; a.stride_w = p.stride[1];
  a.pad_h = p.padding[0]; a.pad_w = p.padding[1];
  a.dil_h = p.dilation[0]; a.dil_w = p.dilation[1];
  return a;
}

void set_input(DepthwiseArgs& a, const at::Tensor& t) {
  a.input = t.data_ptr();
  a.in_sn = t.stride(0); a.in_sc = t.stride(1); a.in_sh = t.stride(2); a.in_sw = t.stride(3);
}

void set_grad_out(DepthwiseArgs& a, const at::Tensor& t) {
  a.grad_out = t.data_ptr();
  a.go_sn = t.stride(0); a.go_sc = t.stride(1); a.go_sh = t.stride(2); a.go_sw = t.stride(3);
}

// TF32 for float32 convolutions follows torch.backends.cudnn.allow_tf32, as torch's conv does.
bool tf32_allowed() { return at::globalContext().allowTF32CuDNN(); }

// The tensor-core kernels (cp.async, bf16/tf32 WMMA) need compute capability 8.0 or newer.
void check_tensor_core_arch(const at::Tensor& t, DType dtype, bool tf32) {
  if (dtype == DType::kDouble || (dtype == DType::kFloat && !tf32)) return;
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, t.device().index()) !=
      cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  TORCH_CHECK(major >= 8, "cnnext.conv2d: ", t.scalar_type(),
              " convolutions need a GPU of compute capability 8.0 or newer on CUDA");
}

at::Tensor conv2d_linear(const at::Tensor& input_, const at::Tensor& weight_,
                         const c10::optional<at::Tensor>& bias_, c10::IntArrayRef stride,
                         c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, bias_, p);
  check_cuda(input_, "input");
  check_groups_grid(g);
  const DType dtype = dtype_of(input_, "conv2d");
  const c10::cuda::CUDAGuard guard(input_.device());
  const cudaStream_t stream = stream_for(input_);
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input_.options());
  if (output.numel() == 0) return output;
  if (g.col_rows() == 0) {  // no input channels: the output is the bias alone
    output.zero_();
    if (has_bias) output.add_(bias.view({-1, 1, 1}));
    return output;
  }
  if (is_depthwise(g)) {
    const at::Tensor weight = weight_.contiguous();
    DepthwiseArgs a = depthwise_args(g, p);
    set_input(a, input_);
    a.weight = weight.data_ptr();
    a.bias = has_bias ? bias.data_ptr() : nullptr;
    a.out = output.data_ptr();
    check_launch(launch_depthwise_forward(a, dtype, stream), "conv2d");
    return output;
  }
  const at::Tensor input = input_.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor filter = forward_filter(weight_);
  ImplicitGemmArgs a = gemm_args(g, p);
  a.src = input.data_ptr();
  a.src_h = g.in_h; a.src_w = g.in_w; a.src_c = g.in_channels;
  a.filter = filter.data_ptr();
  a.bias = has_bias ? bias.data_ptr() : nullptr;
  set_out(a, output);
  a.rows_h = g.out_h; a.rows_w = g.out_w;
  a.gemm_n = g.out_channels_per_group();
  a.k_c = g.in_channels_per_group();
  a.dgrad = false;
  check_tensor_core_arch(input_, dtype, tf32_allowed());
  check_launch(launch_conv_implicit_gemm(a, dtype, tf32_allowed(), stream), "conv2d");
  return output;
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                       c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                       bool relu) {
  at::Tensor output = conv2d_linear(input, weight, bias, stride, padding, dilation, groups);
  // The fused ReLU (convert(fuse=True)), in place on the input's stream; at::relu_ keeps NaN,
  // as torch.relu does.
  if (relu && output.numel() > 0) {
    const c10::cuda::CUDAGuard guard(input.device());
    at::relu_(output);
  }
  return output;
}

// Splits of the grad_weight reduction: enough blocks to fill the GPU, each split at least a
// few K tiles long, and the workspace bounded.
int64_t wgrad_splits(const Conv2dGeometry& g, const at::Tensor& input) {
  const int64_t pixels = g.batch * g.out_h * g.out_w;
  const int64_t tile_blocks = ceil_div(g.out_channels_per_group(), 64) *
                              ceil_div(g.col_rows(), 64) * g.groups;
  int sm_count = 0;
  if (cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, input.device().index()) !=
      cudaSuccess) {
    (void)cudaGetLastError();
    sm_count = 132;
  }
  const int64_t sms = sm_count;
  int64_t splits = std::max<int64_t>(1, (4 * sms) / std::max<int64_t>(1, tile_blocks));
  splits = std::min(splits, std::max<int64_t>(1, pixels / 256));
  const int64_t per_split_bytes = g.out_channels * g.col_rows() * 8;
  splits = std::min(splits, std::max<int64_t>(1, (int64_t(256) << 20) / std::max<int64_t>(1, per_split_bytes)));
  splits = std::min(splits, std::max<int64_t>(1, 65535 / g.groups));
  return splits;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, c10::nullopt, p);
  check_cuda(input_, "input");
  check_cuda(grad_output_, "grad_output");
  check_groups_grid(g);
  check_conv2d_grad_output(grad_output_, input_, g);
  const DType dtype = dtype_of(input_, "conv2d_backward");
  const c10::cuda::CUDAGuard guard(input_.device());
  const cudaStream_t stream = stream_for(input_);
  at::Tensor grad_input = at::empty({0}, input_.options());
  at::Tensor grad_weight = at::empty({0}, weight_.options());
  at::Tensor grad_bias = at::empty({0}, weight_.options());
  const bool empty_reduction = g.batch == 0 || g.out_h * g.out_w == 0;
  const bool depthwise = is_depthwise(g);

  if (output_mask[0]) {
    grad_input = at::empty(input_.sizes(), input_.options());
    if (grad_input.numel() > 0 && (g.out_channels == 0 || g.out_h * g.out_w == 0)) {
      grad_input.zero_();
    } else if (grad_input.numel() > 0 && depthwise) {
      const at::Tensor weight = weight_.contiguous();
      DepthwiseArgs a = depthwise_args(g, p);
      set_grad_out(a, grad_output_);
      a.weight = weight.data_ptr();
      a.out = grad_input.data_ptr();
      check_launch(launch_depthwise_dgrad(a, dtype, stream), "conv2d_backward");
    } else if (grad_input.numel() > 0) {
      const at::Tensor go = grad_output_.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor filter = dgrad_filter(weight_, g.groups);
      ImplicitGemmArgs a = gemm_args(g, p);
      a.src = go.data_ptr();
      a.src_h = g.out_h; a.src_w = g.out_w; a.src_c = g.out_channels;
      a.filter = filter.data_ptr();
      a.bias = nullptr;
      set_out(a, grad_input);
      a.rows_h = g.in_h; a.rows_w = g.in_w;
      a.gemm_n = g.in_channels_per_group();
      a.k_c = g.out_channels_per_group();
      a.dgrad = true;
      check_tensor_core_arch(input_, dtype, tf32_allowed());
      check_launch(launch_conv_implicit_gemm(a, dtype, tf32_allowed(), stream),
                   "conv2d_backward");
    }
  }
  if (output_mask[1]) {
    grad_weight = at::empty(weight_.sizes(), weight_.options());
    if (grad_weight.numel() > 0 && empty_reduction) {
      grad_weight.zero_();
    } else if (grad_weight.numel() > 0 && depthwise) {
      DepthwiseArgs a = depthwise_args(g, p);
      set_input(a, input_);
      set_grad_out(a, grad_output_);
      a.out = grad_weight.data_ptr();
      check_launch(launch_depthwise_wgrad(a, dtype, stream), "conv2d_backward");
    } else if (grad_weight.numel() > 0) {
      const at::Tensor go = grad_output_.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor input = input_.contiguous(at::MemoryFormat::ChannelsLast);
      WgradArgs a{};
      a.grad_out = go.data_ptr();
      a.input = input.data_ptr();
      a.batch = g.batch; a.in_h = g.in_h; a.in_w = g.in_w; a.in_c = g.in_channels;
      a.out_h = g.out_h; a.out_w = g.out_w; a.out_c = g.out_channels;
      a.groups = g.groups; a.kernel_h = g.kernel_h; a.kernel_w = g.kernel_w;
      a.stride_h = p.stride[0]; a.stride_w = p.stride[1];
      a.pad_h = p.padding[0]; a.pad_w = p.padding[1];
      a.dil_h = p.dilation[0]; a.dil_w = p.dilation[1];
      a.splits = wgrad_splits(g, input);
      const auto acc_dtype = dtype == DType::kDouble ? at::kDouble : at::kFloat;
      const at::Tensor workspace = at::empty(
          {wgrad_workspace_bytes(a, dtype) / (dtype == DType::kDouble ? 8 : 4)},
          input_.options().dtype(acc_dtype));
      // Kernel result layout [Cout][KH][KW][Cin_g], returned as [Cout][Cin_g][KH][KW].
      const at::Tensor khwc = at::empty({g.out_channels, g.kernel_h, g.kernel_w,
                                         g.in_channels_per_group()}, weight_.options());
      a.workspace = workspace.data_ptr();
      a.grad_weight = khwc.data_ptr();
      check_launch(launch_conv_wgrad(a, dtype, stream), "conv2d_backward");
      grad_weight.copy_(khwc.permute({0, 3, 1, 2}));
    }
  }
  if (output_mask[2]) {
    grad_bias = at::empty({g.out_channels}, weight_.options());
    if (grad_bias.numel() > 0 && empty_reduction) {
      grad_bias.zero_();
    } else if (grad_bias.numel() > 0) {
      BiasGradArgs a{};
      a.grad_out = grad_output_.data_ptr();
      a.go_sn = grad_output_.stride(0); a.go_sc = grad_output_.stride(1);
      a.go_sh = grad_output_.stride(2); a.go_sw = grad_output_.stride(3);
      a.grad_bias = grad_bias.data_ptr();
      a.batch = g.batch; a.channels = g.out_channels; a.h = g.out_h; a.w = g.out_w;
      check_launch(launch_bias_grad(a, dtype, stream), "conv2d_backward");
    }
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace cnnext::cuda

TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("conv2d", &cnnext::cuda::conv2d_cuda);
  m.impl("conv2d_backward", &cnnext::cuda::conv2d_backward_cuda);
}
