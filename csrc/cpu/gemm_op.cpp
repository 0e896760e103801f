// The cnnext::gemm operator: our GEMM on 2-D tensors, for tests and the benchmark's GEMM row.
#include <torch/library.h>
#include <torch/types.h>

#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

at::Tensor gemm_cpu(const at::Tensor& a_, const at::Tensor& b_, bool trans_a, bool trans_b,
                    double alpha, double beta, const c10::optional<at::Tensor>& c_,
                    c10::string_view isa_name_) {
  TORCH_CHECK(a_.dim() == 2 && b_.dim() == 2, "cnnext.gemm: a and b must be 2-D, got a ",
              a_.sizes(), " and b ", b_.sizes());
  TORCH_CHECK(a_.scalar_type() == b_.scalar_type() &&
                  (a_.scalar_type() == at::kFloat || a_.scalar_type() == at::kDouble),
              "cnnext.gemm: a and b must both be float32 or both float64, got ",
              a_.scalar_type(), " and ", b_.scalar_type());
  const Isa isa = parse_isa(std::string(isa_name_));
  TORCH_CHECK(static_cast<int>(isa) <= static_cast<int>(best_supported_isa()),
              "cnnext.gemm: isa='", isa_name(isa), "' is not supported by this CPU");
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const int64_t M = trans_a ? a.size(1) : a.size(0);
  const int64_t K = trans_a ? a.size(0) : a.size(1);
  const int64_t Kb = trans_b ? b.size(1) : b.size(0);
  const int64_t N = trans_b ? b.size(0) : b.size(1);
  TORCH_CHECK(K == Kb, "cnnext.gemm: inner dimensions differ: op(a) is ", M, "x", K,
              ", op(b) is ", Kb, "x", N);
  at::Tensor c;
  if (c_.has_value() && c_->defined()) {
    TORCH_CHECK(c_->sizes() == at::IntArrayRef({M, N}) && c_->scalar_type() == a.scalar_type(),
                "cnnext.gemm: c must be ", M, "x", N, " of dtype ", a.scalar_type());
    c = c_->contiguous().clone();
  } else {
    TORCH_CHECK(beta == 0.0, "cnnext.gemm: beta != 0 needs c");
    c = at::empty({M, N}, a.options());
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "cnnext_gemm", [&] {
    gemm_isa<scalar_t>(isa, trans_a, trans_b, M, N, K, static_cast<scalar_t>(alpha),
                       a.data_ptr<scalar_t>(), a.size(1), b.data_ptr<scalar_t>(), b.size(1),
                       static_cast<scalar_t>(beta), c.data_ptr<scalar_t>(), N);
  });
  return c;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) { m.impl("gemm", &gemm_cpu); }

}  // namespace cnnext::cpu
