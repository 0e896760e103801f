// Every operator schema of cnnext, and nothing else. Kernels register per device in
// csrc/cpu and csrc/cuda; autograd of the forward operators in C++ (csrc/autograd_*.cpp); fake
// kernels and the backward operators' own autograd (double backward) in Python (cnnext/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(cnnext, m) {
  // ---- convolution --------------------------------------------------------------------
  // Symmetric padding; 'same' with an odd total is padded in Python first, as torch does.
  // relu=True applies max(0, x) to the output in the kernel's epilogue (convert(fuse=True)).
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, bool relu=False) -> Tensor");
  // output_mask selects (grad_input, grad_weight, grad_bias); unselected results are
  // returned as empty tensors and never computed.
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) -> "
      "(Tensor, Tensor, Tensor)");

  // ---- the CPU conv algorithm table (introspection for tests, tools and benchmarks) -------
  // pass is "forward", "grad_input" or "grad_weight". Sizes are NCHW input and OIHW weight;
  // channels_last asks about the NHWC problem (activations in NHWC).
  m.def(
      "_conv2d_algorithms(int[] input_size, int[] weight_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, ScalarType dtype, str pass_, bool channels_last=False) -> str[]");
  m.def(
      "_conv2d_choice(int[] input_size, int[] weight_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, ScalarType dtype, str pass_, bool channels_last=False) -> str");
  // [calls, tasks, macs, bytes, estimated seconds] of one row for one pass (conv_cost_model.h).
  m.def(
      "_conv2d_cost_features(int[] input_size, int[] weight_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, ScalarType dtype, str pass_, "
      "str algorithm, bool channels_last=False) -> float[]");
  // Mean nanoseconds of one rule-based choice over `repeats` choices.
  m.def(
      "_conv2d_choice_ns(int[] input_size, int[] weight_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, ScalarType dtype, str pass_, int repeats, "
      "bool channels_last=False) -> float");
  // cnnext.backends.cpu.benchmark: set (enabled given) and read the flag; the cache's size,
  // emptied first when clear.
  m.def("_conv2d_benchmark(bool? enabled) -> bool");
  m.def("_conv2d_benchmark_cache(bool clear) -> int");
  // The ISA the CPU kernels run ("avx512", "avx2" or "portable"): CNNEXT_ISA narrowed to the CPU.
  m.def("_cpu_isa() -> str");
  // What bfloat16 convolution products run on: "avx512bf16" (pair dot products) or "float32"
  // (float32 kernels on converted copies): the CPU's AVX512-BF16 narrowed by CNNEXT_ISA.
  m.def("_cpu_bf16_isa() -> str");
  // The register-only AVX512-BF16 rate on every thread in GFLOP/s (0 without AVX512-BF16).
  m.def("_cpu_bf16_dot_peak(int iterations) -> float");
  // The inference weight-packing cache (csrc/cpu/weight_cache.h): [entries, bytes, hits,
  // misses], emptied first (counters too) when clear.
  m.def("_weight_cache(bool clear) -> int[]");
  // self's values copied into NCHW (or channels_last) contiguous strides through the copy the
  // CPU conv uses between layouts (csrc/cpu/layout_copy.h); for tests and measurements.
  m.def("_layout_copy(Tensor self, bool channels_last) -> Tensor");

  // ---- GEMM (exposed for tests and the benchmark's GEMM row) ----------------------------
  // C = alpha * op(a) @ op(b) + beta * c; isa is "auto", "avx512", "avx2" or "portable".
  m.def(
      "gemm(Tensor a, Tensor b, bool trans_a, bool trans_b, float alpha, float beta, "
      "Tensor? c, str isa) -> Tensor");

  // ---- pooling ------------------------------------------------------------------------
  // 4-D (N, C, H, W) only (batch-less input is batched in Python). Indices are int64, flat
  // h * W + w within each (n, c) plane. Outputs, indices and grad_input follow
  // self.suggest_memory_format(). `self` in a backward gives the input's shape, dtype and
  // format; the window parameters let a backward gather over covering windows.
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // max_pool2d's values without indices (no index work), for calls that need no gradient.
  m.def(
      "max_pool2d_values(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  // What the autograd of max_pool2d_values saves on the CPU instead of indices: per output,
  // the uint8 window tap of its maximum (r * kernel_w + s in dilation steps from the clipped
  // window's first element; 255 for a window with no element), an eighth of int64 indices'
  // bytes. Kernel area at most 255.
  m.def(
      "max_pool2d_taps(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_taps_backward(Tensor grad_output, Tensor self, Tensor taps, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def(
      "avg_pool2d_backward(Tensor grad_output, Tensor self, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("adaptive_avg_pool2d(Tensor self, int[2] output_size) -> Tensor");
  m.def("adaptive_avg_pool2d_backward(Tensor grad_output, Tensor self) -> Tensor");
  m.def("adaptive_max_pool2d(Tensor self, int[2] output_size) -> (Tensor, Tensor)");
  m.def(
      "adaptive_max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices) -> Tensor");
}
