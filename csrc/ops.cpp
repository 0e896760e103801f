// Every operator schema of cnnext, and nothing else. Kernels register per device in
// csrc/cpu and csrc/cuda; fake kernels and autograd are added in Python (cnnext/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(cnnext, m) {
  // ---- convolution --------------------------------------------------------------------
  // Symmetric padding; 'same' with an odd total is padded in Python first, as torch does.
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // output_mask selects (grad_input, grad_weight, grad_bias); unselected results are
  // returned as empty tensors and never computed.
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) -> "
      "(Tensor, Tensor, Tensor)");

  // ---- GEMM (exposed for tests and the benchmark's GEMM row) ----------------------------
  // C = alpha * op(a) @ op(b) + beta * c; isa is "auto", "avx512", "avx2" or "portable".
  m.def(
      "gemm(Tensor a, Tensor b, bool trans_a, bool trans_b, float alpha, float beta, "
      "Tensor? c, str isa) -> Tensor");
}
