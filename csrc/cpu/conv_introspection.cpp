// The algorithm table seen from Python: which rows apply, what the rule picks and why (its
// features and estimate), how long a choice takes, and the benchmark-mode switch.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "../common/conv_shapes.h"
#include "conv_cost_model.h"
#include "conv_select.h"
#include "gemm/bf16_dot.h"
#include "gemm/gemm.h"
#include "weight_cache.h"

namespace cnnext::cpu {
namespace {

ConvPass parse_pass(c10::string_view name) {
  if (name == "forward") return ConvPass::Forward;
  if (name == "grad_input") return ConvPass::GradInput;
  if (name == "grad_weight") return ConvPass::GradWeight;
  TORCH_CHECK(false, "cnnext: pass must be forward, grad_input or grad_weight, got '",
              std::string(name), "'");
}

ConvProblem make_problem(c10::IntArrayRef in, c10::IntArrayRef w, c10::IntArrayRef stride,
                         c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                         at::ScalarType dtype, bool channels_last) {
  TORCH_CHECK(in.size() == 4 && w.size() == 4,
              "cnnext: expected 4 input and 4 weight sizes, got ", in, " and ", w);
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  // The real checks, on meta tensors: a geometry the operator would reject is rejected here.
  const auto meta = at::TensorOptions().dtype(dtype).device(at::kMeta);
  const Conv2dGeometry g = check_conv2d(at::empty(in, meta), at::empty(w, meta), c10::nullopt, p);
  return ConvProblem{g, p, dtype, at::get_num_threads(), channels_last};
}

std::vector<std::string> algorithms(c10::IntArrayRef in, c10::IntArrayRef w,
                                    c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    c10::IntArrayRef dilation, int64_t groups,
                                    at::ScalarType dtype, c10::string_view pass, bool channels_last) {
  const ConvProblem pr =
      make_problem(in, w, stride, padding, dilation, groups, dtype, channels_last);
  std::vector<std::string> names;
  for (const ConvAlgorithm* a : applicable_algorithms(pr, parse_pass(pass))) names.push_back(a->name);
  return names;
}

std::string choice(c10::IntArrayRef in, c10::IntArrayRef w, c10::IntArrayRef stride,
                   c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                   at::ScalarType dtype, c10::string_view pass, bool channels_last) {
  const ConvProblem pr =
      make_problem(in, w, stride, padding, dilation, groups, dtype, channels_last);
  const ConvAlgorithm* a = choose_by_rule(pr, parse_pass(pass));
  return a == nullptr ? std::string() : std::string(a->name);
}

std::vector<double> cost_features_of(c10::IntArrayRef in, c10::IntArrayRef w,
                                     c10::IntArrayRef stride, c10::IntArrayRef padding,
                                     c10::IntArrayRef dilation, int64_t groups,
                                     at::ScalarType dtype, c10::string_view pass,
                                     c10::string_view algorithm, bool channels_last) {
  const ConvProblem pr =
      make_problem(in, w, stride, padding, dilation, groups, dtype, channels_last);
  const ConvPass ps = parse_pass(pass);
  static const char* const ids[] = {"direct",   "pointwise",      "winograd",   "implicit",
                                    "im2col",   "matmul",         "pointwise_nhwc",
                                    "im2col_nhwc", "direct_nhwc", "grouped_nhwc"};
  static_assert(sizeof(ids) / sizeof(ids[0]) == static_cast<size_t>(ConvAlgoId::Count));
  for (int i = 0; i < static_cast<int>(ConvAlgoId::Count); ++i) {
    if (algorithm != ids[i]) continue;
    const ConvAlgoId id = static_cast<ConvAlgoId>(i);
    const CostFeatures f = cost_features(id, pr, ps);
    return {f.calls, f.tasks, f.macs, f.bytes, estimate_seconds(id, pr, ps)};
  }
  TORCH_CHECK(false, "cnnext: no conv algorithm named '", std::string(algorithm), "'");
}

double choice_ns(c10::IntArrayRef in, c10::IntArrayRef w, c10::IntArrayRef stride,
                 c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                 at::ScalarType dtype, c10::string_view pass, int64_t repeats,
                 bool channels_last) {
  const ConvProblem pr =
      make_problem(in, w, stride, padding, dilation, groups, dtype, channels_last);
  const ConvPass ps = parse_pass(pass);
  TORCH_CHECK(repeats > 0, "cnnext: repeats must be positive, got ", repeats);
  const ConvAlgorithm* volatile sink = nullptr;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < repeats; ++i) sink = choose_by_rule(pr, ps);
  (void)sink;
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  return ns / static_cast<double>(repeats);
}

bool benchmark_flag(c10::optional<bool> enabled) {
  if (enabled.has_value()) set_conv_benchmark(*enabled);
  return conv_benchmark_enabled();
}

int64_t benchmark_cache(bool clear) {
  if (clear) clear_conv_benchmark_cache();
  return conv_benchmark_cache_size();
}

std::string cpu_isa() { return isa_name(active_isa()); }

std::string cpu_bf16_isa() { return bf16::dot_available() ? "avx512bf16" : "float32"; }

double cpu_bf16_dot_peak(int64_t iterations) {
  return bf16::dot_available() ? bf16::dot_peak_gflops(iterations) : 0.0;
}

std::vector<int64_t> weight_cache(bool clear) {
  if (clear) clear_weight_cache();
  const WeightCacheStats s = weight_cache_stats();
  return {s.entries, s.bytes, s.hits, s.misses};
}

}  // namespace

// No tensor arguments: registered for every backend at once.
TORCH_LIBRARY_IMPL(cnnext, CompositeImplicitAutograd, m) {
  m.impl("_conv2d_algorithms", &algorithms);
  m.impl("_conv2d_choice", &choice);
  m.impl("_conv2d_cost_features", &cost_features_of);
  m.impl("_conv2d_choice_ns", &choice_ns);
  m.impl("_conv2d_benchmark", &benchmark_flag);
  m.impl("_conv2d_benchmark_cache", &benchmark_cache);
  m.impl("_cpu_isa", &cpu_isa);
  m.impl("_cpu_bf16_isa", &cpu_bf16_isa);
  m.impl("_cpu_bf16_dot_peak", &cpu_bf16_dot_peak);
  m.impl("_weight_cache", &weight_cache);
}

}  // namespace cnnext::cpu
