// The matmul row: a 1x1 convolution of 1x1 maps (squeeze-excite blocks, 1x1-conv classifier
// heads) is a matrix product over the batch, out[n][o] = sum_c in[n][c] w[o][c]. The other rows
// run one GEMM per image with a single output column; here the batch is the GEMM's rows and
// one call does all images.
#include <ATen/Dispatch.h>

#include <algorithm>

#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

bool applies(const ConvProblem& pr, ConvPass) {
  // 1x1 maps lie the same in NCHW and NHWC: the row serves both layouts.
  return (pr.dtype == at::kFloat || pr.dtype == at::kDouble) &&
         is_pointwise(pr.g, pr.p) &&
         pr.g.in_h == 1 && pr.g.in_w == 1;
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::Matmul, pr, pass);
}

template <typename T>
void run_typed(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const int64_t N = g.batch, C = g.in_channels, O = g.out_channels;
  const int64_t cg = g.in_channels_per_group(), og = g.out_channels_per_group();
  for (int64_t k = 0; k < g.groups; ++k) {
    switch (pass) {
      case ConvPass::Forward: {
        T* out = t.output.data_ptr<T>() + k * og;
        T beta = 0;
        if (t.bias.defined()) {  // bias pre-filled, then the GEMM accumulates onto it
          const T* b = t.bias.data_ptr<T>() + k * og;
          for (int64_t n = 0; n < N; ++n) std::copy(b, b + og, out + n * O);
          beta = 1;
        }
        gemm<T>(false, true, N, og, cg, T(1), t.input.data_ptr<T>() + k * cg, C,
                t.weight.data_ptr<T>() + k * og * cg, cg, beta, out, O);
        break;
      }
      case ConvPass::GradInput:
        gemm<T>(false, false, N, cg, og, T(1), t.grad_output.data_ptr<T>() + k * og, O,
                t.weight.data_ptr<T>() + k * og * cg, cg, T(0),
                t.grad_input.data_ptr<T>() + k * cg, C);
        break;
      case ConvPass::GradWeight:
        // One GEMM sums over the batch in a fixed order: deterministic.
        gemm<T>(true, false, og, cg, N, T(1), t.grad_output.data_ptr<T>() + k * og, O,
                t.input.data_ptr<T>() + k * cg, C, T(0), t.grad_weight.data_ptr<T>() + k * og * cg,
                cg);
        break;
    }
  }
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_matmul",
                             [&] { run_typed<scalar_t>(pr, pass, t); });
}

}  // namespace

const ConvAlgorithm kMatmulAlgorithm{"matmul", applies, cost, run};

}  // namespace cnnext::cpu
