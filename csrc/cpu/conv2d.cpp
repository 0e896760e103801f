// CPU conv2d: checks, the layout of the results, allocation, then per pass one row of the
// algorithm table (conv_algorithms.h) chosen by conv_select.h. The algorithms live in
// conv_algo_*.cpp.
//
// Layouts: output and grad_input are channels_last where the input is (cnnext/ops.py's fake
// kernels state the same rule), computed on the tensors as they lie by the table's NHWC rows,
// or by the NCHW rows on copies where the cost rule says the copies pay (choose_nhwc). A row
// forced with CNNEXT_CONV_ALGO that has no NHWC form runs on NCHW copies, its results
// converted back, so forcing never changes a result's layout. (torch also returns
// channels_last for an NCHW input with a channels_last weight: cnnext/functional.py converts
// that output, as torch's own kernel copies the input.)
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cstring>
#include <vector>

#include "../common/conv_shapes.h"
#include "conv_algorithms.h"
#include "conv2d_bf16_nhwc.h"
#include "depthwise_conv2d_nhwc.h"
#include "grouped_conv2d_bf16_dot.h"
#include "grouped_conv2d_nhwc.h"
#include "conv_select.h"
#include "layout_copy.h"
#include "weight_cache.h"

namespace cnnext::cpu {
namespace {

bool is_reduced_float(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

void check_cpu_dtype(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "cnnext.conv2d: expected a CPU tensor, got ", t.device());
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || is_reduced_float(dtype),
              "cnnext.conv2d: input dtype ", dtype,
              " is not supported on CPU (float32, float64, bfloat16 and float16 are)");
}

// float16 and bfloat16 (and bfloat16 wherever the AVX512-BF16 path does not serve) run the
// float32 kernels on float32 copies, the results rounded back once: float32 accumulation, as
// torch's own CPU kernels accumulate these dtypes.
at::Tensor as_float(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

ConvProblem make_problem(const Conv2dGeometry& g, const Conv2dParams& p, at::ScalarType dtype,
                         bool channels_last) {
  return ConvProblem{g, p, dtype, at::in_parallel_region() ? 1 : at::get_num_threads(),
                     channels_last};
}

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

bool nhwc_results(const at::Tensor& input) {
  return input.suggest_memory_format() == kChannelsLast;
}

// The weight (OIHW or channels_last) as OIHW-contiguous values of `dtype`, kept in the weight
// cache under its conditions (grad mode off, weight_cache.h) as the packing `kind`, keyed on
// the caller's weight and checked against its bytes as stored; a fresh copy otherwise.
at::Tensor oihw_copy(const at::Tensor& weight, at::ScalarType dtype, int64_t kind) {
  const WeightCacheScope scope(weight, weight);
  std::vector<int64_t> key{kind, int64_t(weight.scalar_type())};
  for (int64_t s : weight.sizes()) key.push_back(s);
  const at::Tensor cached = cached_packed_weight(
      weight_pack_kind_of(key), static_cast<size_t>(weight.numel()) * c10::elementSize(dtype),
      [&](void* dst) {
        at::from_blob(dst, weight.sizes(), weight.options().dtype(dtype)).copy_(weight);
      });
  if (cached.defined()) return cached.view(dtype).view(weight.sizes());
  return at::empty(weight.sizes(), weight.options().dtype(dtype)).copy_(weight);
}

// The weight as OIHW-contiguous values, which every CPU kernel reads. A channels_last weight
// (a model converted with .to(memory_format=torch.channels_last)) would be copied on every
// call, into fresh pages: a late ResNet layer's 9.4 MB at batch 1 cost about as much as its
// convolution, so its copy is cached.
at::Tensor oihw_weight(const at::Tensor& weight) {
  if (weight.is_contiguous()) return weight;
  if (!weight.is_contiguous(kChannelsLast)) return weight.contiguous();
  return oihw_copy(weight, weight.scalar_type(), kOihwCopy);
}

// A bfloat16 / float16 weight as float32 OIHW values for the float32 kernels, cached like any
// packing, so inference converts each weight once: per call, the conversion of a late ResNet
// layer's weight cost about as much as its batch-1 convolution.
at::Tensor float_oihw_weight(const at::Tensor& weight) {
  if (weight.is_contiguous() || weight.is_contiguous(kChannelsLast))
    return oihw_copy(weight, at::kFloat, kFloatOihwCopy);
  return at::empty(weight.sizes(), weight.options().dtype(at::kFloat)).copy_(weight);
}

void run_pass(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const ConvAlgorithm* algo = choose_conv_algorithm(pr, pass, t);
  TORCH_CHECK(algo != nullptr, "cnnext.conv2d: no CPU algorithm applies to this problem");
  algo->run(pr, pass, t);
}

// The fused ReLU (convert(fuse=True)): x < 0 ? 0 : x keeps NaN, as torch.relu does; one
// contiguous pass the compiler vectorises.
void relu_in_place(at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, output.scalar_type(),
                                  "cnnext_conv2d_relu", [&] {
    scalar_t* out = output.data_ptr<scalar_t>();
    at::parallel_for(0, output.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = out[i] < scalar_t(0) ? scalar_t(0) : out[i];
    });
  });
}

// bfloat16 with AVX512-BF16 (conv2d_bf16_nhwc.h), and depthwise and few-channel grouped
// bfloat16 on any CPU (float32 lanes on bfloat16 storage, depthwise_conv2d_nhwc.h,
// grouped_conv2d_nhwc.h): computed in NHWC; an NCHW input is
// copied to NHWC once and its output copied back (torch returns NCHW for it).
at::Tensor conv2d_bf16_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                           const c10::optional<at::Tensor>& bias_, const Conv2dGeometry& g,
                           const Conv2dParams& p, bool cl_results, bool relu) {
  const at::Tensor input = contiguous_in(input_, kChannelsLast);
  const at::Tensor weight = oihw_weight(weight_);
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w},
                                input.options().memory_format(kChannelsLast));
  if (output.numel() > 0 && g.col_rows() == 0) {  // no input channels: the bias alone
    output.zero_();
    if (has_bias) output.add_(bias.view({-1, 1, 1}));
  } else if (output.numel() > 0) {
    const at::BFloat16* b = has_bias ? bias.data_ptr<at::BFloat16>() : nullptr;
    if (depthwise_nhwc_applies(g)) {
      depthwise_nhwc_forward_bf16(input.data_ptr<at::BFloat16>(), weight.data_ptr<at::BFloat16>(),
                                  b, output.data_ptr<at::BFloat16>(), g, p);
    } else if (grouped_nhwc_applies(g, false) || grouped_bf16_dot_applies(g)) {
      grouped_nhwc_forward_bf16(input.data_ptr<at::BFloat16>(), weight.data_ptr<at::BFloat16>(),
                                b, output.data_ptr<at::BFloat16>(), g, p);
    } else {
      const WeightCacheScope weight_cache_scope(weight_, weight);
      bf16_nhwc_forward(input, weight, bias, output, g, p);
    }
  }
  if (relu) relu_in_place(output);
  return cl_results ? output : contiguous_in(output, at::MemoryFormat::Contiguous);
}

// The float32 / float64 forward. `identity` is the caller's weight, which keys the weight
// cache's packings: weight_ itself, or the float32 copy of a bfloat16 / float16 one.
at::Tensor conv2d_float_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                            const c10::optional<at::Tensor>& bias_, const Conv2dGeometry& g,
                            const Conv2dParams& p, bool relu, const at::Tensor& identity) {
  const bool cl_results = nhwc_results(input_);
  const ConvProblem nhwc = make_problem(g, p, input_.scalar_type(), true);
  const double elem = static_cast<double>(input_.element_size());
  const bool in_nhwc =
      cl_results &&
      choose_nhwc(nhwc, ConvPass::Forward, elem * double(g.input_numel() + g.output_numel()));
  const auto layout = in_nhwc ? kChannelsLast : at::MemoryFormat::Contiguous;
  ConvTensors t;
  t.input = contiguous_in(input_, layout);
  t.weight = oihw_weight(weight_);
  const bool has_bias = bias_.has_value() && bias_->defined();
  if (has_bias) t.bias = bias_->contiguous();
  t.output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w},
                       t.input.options().memory_format(layout));
  if (t.output.numel() > 0 && g.col_rows() == 0) {  // no input channels: the bias alone
    t.output.zero_();
    if (has_bias) t.output.add_(t.bias.view({-1, 1, 1}));
  } else if (t.output.numel() > 0) {
    const WeightCacheScope weight_cache_scope(identity, t.weight);  // reuse of packed weights
    run_pass(in_nhwc ? nhwc : make_problem(g, p, input_.scalar_type(), false), ConvPass::Forward,
             t);
  }
  if (relu) relu_in_place(t.output);
  return cl_results && !in_nhwc ? copy_in(t.output, kChannelsLast) : t.output;
}

at::Tensor conv2d_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                      const c10::optional<at::Tensor>& bias_, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                      bool relu) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, bias_, p);
  check_cpu_dtype(input_);
  if (!is_reduced_float(input_.scalar_type()))
    return conv2d_float_cpu(input_, weight_, bias_, g, p, relu, weight_);
  if (input_.scalar_type() == at::kBFloat16 &&
      (depthwise_nhwc_applies(g) || grouped_nhwc_applies(g, false) ||
       grouped_bf16_dot_applies(g) || bf16_nhwc_forward_applies(g)))
    return conv2d_bf16_cpu(input_, weight_, bias_, g, p, nhwc_results(input_), relu);
  const c10::optional<at::Tensor> bias_f =
      bias_.has_value() ? c10::optional<at::Tensor>(as_float(*bias_)) : c10::nullopt;
  return conv2d_float_cpu(as_float(input_), float_oihw_weight(weight_), bias_f, g, p, relu,
                          weight_)
      .to(input_.scalar_type());
}

// grad_bias[oc] = sum over images (in order) of each image's plane sum.
template <typename T>
void grad_bias_sum(const T* go, const Conv2dGeometry& g, T* gb) {
  const int64_t P = g.out_plane();
  at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      T acc = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const T* row = go + (n * g.out_channels + oc) * P;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < P; ++i) s += row[i];
        acc += s;
      }
      gb[oc] = acc;
    }
  });
}

// The same sums over an NHWC grad_output: rows of out_channels values, added in row order.
template <typename T>
void grad_bias_sum_nhwc(const T* go, const Conv2dGeometry& g, T* gb) {
  const int64_t rows = g.batch * g.out_plane(), C = g.out_channels;
  constexpr int64_t kBlock = 64;  // channels per task: one cache line per row and task
  at::parallel_for(0, (C + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
      T acc[kBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const T* row = go + r * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
      }
      for (int64_t c = c0; c < c1; ++c) gb[c] = acc[c - c0];
    }
  });
}

// grad_bias of a bfloat16 NHWC grad_output: float32 sums over fixed chunks of pixel rows, the
// chunks' partials added in chunk order (the same bits for every thread count), rounded once.
void grad_bias_bf16(const at::Tensor& go_nhwc, const Conv2dGeometry& g, at::Tensor& gb) {
  const int64_t rows = g.batch * g.out_plane(), C = g.out_channels;
  constexpr int64_t kChunkRows = 1024;
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  std::vector<float> partial(static_cast<size_t>(chunks * C), 0.0f);
  const auto* go = reinterpret_cast<const uint16_t*>(go_nhwc.data_ptr<at::BFloat16>());
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      float* acc = partial.data() + k * C;
      const int64_t r1 = std::min(rows, (k + 1) * kChunkRows);
      for (int64_t r = k * kChunkRows; r < r1; ++r) {
        const uint16_t* row = go + r * C;
        for (int64_t c = 0; c < C; ++c) {  // a bfloat16 is a float32's high half
          const uint32_t bits = uint32_t(row[c]) << 16;
          float v;
          std::memcpy(&v, &bits, sizeof v);
          acc[c] += v;
        }
      }
    }
  });
  at::BFloat16* out = gb.data_ptr<at::BFloat16>();
  for (int64_t c = 0; c < C; ++c) {
    float sum = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) sum += partial[static_cast<size_t>(k * C + c)];
    out[c] = static_cast<at::BFloat16>(sum);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, c10::nullopt, p);
  check_cpu_dtype(input_);
  check_conv2d_grad_output(grad_output_, input_, g);
  if (is_reduced_float(input_.scalar_type())) {
    const auto dtype = input_.scalar_type();
    at::Tensor go_nhwc;  // grad_output as the native passes read it, made once
    const auto grad_output_nhwc = [&]() -> const at::Tensor& {
      if (!go_nhwc.defined()) go_nhwc = contiguous_in(grad_output_, kChannelsLast);
      return go_nhwc;
    };
    at::Tensor native_gi;
    if (dtype == at::kBFloat16 && output_mask[0] && input_.numel() > 0 &&
        g.col_rows() > 0 && g.output_numel() > 0) {
      const bool grouped = grouped_nhwc_applies(g, false) || grouped_bf16_dot_applies(g);
      if (grouped || bf16_nhwc_grad_input_applies(g)) {
        native_gi = at::empty(input_.sizes(), input_.options().memory_format(kChannelsLast));
        const at::Tensor weight = weight_.contiguous();
        if (grouped)
          grouped_nhwc_grad_input_bf16(grad_output_nhwc().data_ptr<at::BFloat16>(),
                                       weight.data_ptr<at::BFloat16>(),
                                       native_gi.data_ptr<at::BFloat16>(), g, p);
        else
          bf16_nhwc_grad_input(grad_output_nhwc(), weight, native_gi, g, p);
        if (!nhwc_results(input_))
          native_gi = contiguous_in(native_gi, at::MemoryFormat::Contiguous);
      }
    }
    at::Tensor native_gw;
    if (dtype == at::kBFloat16 && output_mask[1] && g.batch > 0 && g.output_numel() > 0 &&
        g.col_rows() > 0) {
      if (grouped_nhwc_applies(g, false)) {
        native_gw = at::empty(weight_.sizes(), weight_.options());
        grouped_nhwc_grad_weight_bf16(grad_output_nhwc().data_ptr<at::BFloat16>(),
                                      contiguous_in(input_, kChannelsLast).data_ptr<at::BFloat16>(),
                                      native_gw.data_ptr<at::BFloat16>(), g, p);
      } else if (bf16_nhwc_grad_weight_applies(g)) {
        native_gw = at::empty(weight_.sizes(), weight_.options());
        bf16_nhwc_grad_weight(grad_output_nhwc(), contiguous_in(input_, kChannelsLast), native_gw,
                              g, p);
      }
    }
    std::array<bool, 3> rest = output_mask;
    if (native_gi.defined()) rest[0] = false;
    if (native_gw.defined()) rest[1] = false;
    at::Tensor gi = native_gi.defined() ? native_gi : at::empty({0}, input_.options());
    at::Tensor gw = native_gw.defined() ? native_gw : at::empty({0}, weight_.options());
    at::Tensor gb = at::empty({0}, weight_.options());
    if (rest[2] && !rest[0] && !rest[1] && dtype == at::kBFloat16) {
      gb = at::empty({g.out_channels}, weight_.options());
      grad_bias_bf16(grad_output_nhwc(), g, gb);
    } else if (rest[0] || rest[1] || rest[2]) {
      auto [fgi, fgw, fgb] = conv2d_backward_cpu(as_float(grad_output_), as_float(input_),
                                                 as_float(weight_), stride, padding, dilation,
                                                 groups, rest);
      if (rest[0]) gi = fgi.to(dtype);
      if (rest[1]) gw = fgw.to(dtype);
      gb = fgb.to(dtype);
    }
    return {gi, gw, gb};
  }
  const bool cl_results = nhwc_results(input_);
  const ConvProblem nchw = make_problem(g, p, input_.scalar_type(), false);
  const ConvProblem nhwc = make_problem(g, p, input_.scalar_type(), true);
  // The NCHW rows would copy grad_output and the pass's other activation.
  const double copy_bytes =
      static_cast<double>(input_.element_size()) * (g.input_numel() + g.output_numel());
  const bool gi_nhwc = cl_results && choose_nhwc(nhwc, ConvPass::GradInput, copy_bytes);
  const bool gw_nhwc = cl_results && choose_nhwc(nhwc, ConvPass::GradWeight, copy_bytes);
  // grad_output in each layout some pass reads, made contiguous once.
  at::Tensor go_nchw, go_nhwc;
  const auto grad_output_in = [&](bool in_nhwc) -> const at::Tensor& {
    at::Tensor& go = in_nhwc ? go_nhwc : go_nchw;
    if (!go.defined())
      go = contiguous_in(grad_output_,
                         in_nhwc ? kChannelsLast : at::MemoryFormat::Contiguous);
    return go;
  };
  // Unselected results are empty (0-element) tensors: custom ops return defined tensors.
  at::Tensor grad_input = at::empty({0}, input_.options());
  at::Tensor grad_weight = at::empty({0}, weight_.options());
  at::Tensor grad_bias = at::empty({0}, weight_.options());
  if (output_mask[0])
    grad_input = at::empty(input_.sizes(),
                           input_.options().memory_format(gi_nhwc ? kChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
  if (output_mask[1]) grad_weight = at::empty(weight_.sizes(), weight_.options());
  if (output_mask[2]) grad_bias = at::empty({g.out_channels}, weight_.options());
  const bool empty_sum = g.col_rows() == 0 || g.out_channels == 0 || g.out_plane() == 0;
  const bool want_gi = output_mask[0] && grad_input.numel() > 0;
  const bool want_gw = output_mask[1] && grad_weight.numel() > 0;
  if (want_gi) {
    if (empty_sum) {
      grad_input.zero_();
    } else {
      ConvTensors t;
      t.grad_output = grad_output_in(gi_nhwc);
      t.weight = weight_.contiguous();
      t.grad_input = grad_input;
      run_pass(gi_nhwc ? nhwc : nchw, ConvPass::GradInput, t);
    }
  }
  if (output_mask[0] && cl_results && !gi_nhwc) grad_input = copy_in(grad_input, kChannelsLast);
  if (want_gw) {
    if (empty_sum || g.batch == 0) {
      grad_weight.zero_();
    } else {
      // grad_weight needs the input's values; only then is the input made contiguous.
      ConvTensors t;
      t.grad_output = grad_output_in(gw_nhwc);
      t.input =
          contiguous_in(input_, gw_nhwc ? kChannelsLast : at::MemoryFormat::Contiguous);
      t.grad_weight = grad_weight;
      run_pass(gw_nhwc ? nhwc : nchw, ConvPass::GradWeight, t);
    }
  }
  if (output_mask[2]) {
    // Either layout some pass already made, else the input's own.
    const bool sum_nhwc = go_nhwc.defined() || (!go_nchw.defined() && cl_results);
    const at::Tensor& go = grad_output_in(sum_nhwc);
    AT_DISPATCH_FLOATING_TYPES(input_.scalar_type(), "cnnext_conv2d_grad_bias", [&] {
      if (sum_nhwc)
        grad_bias_sum_nhwc(go.data_ptr<scalar_t>(), g, grad_bias.data_ptr<scalar_t>());
      else
        grad_bias_sum(go.data_ptr<scalar_t>(), g, grad_bias.data_ptr<scalar_t>());
    });
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("conv2d", &conv2d_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace cnnext::cpu
