#pragma once
// Our own GEMM: C[M x N] = alpha * op(A)[M x K] * op(B)[K x N] + beta * C, row-major.
// op(X) is X or X^T. Leading dimensions are in elements. When beta == 0, C is write-only:
// it is never read, so it may hold garbage (NaN included) from at::empty.
// The call parallelises internally (at::parallel_for) over disjoint blocks of C. Every C
// element is computed by one fixed-order FMA chain over K whichever thread owns it, so results
// are deterministic and independent of the thread count (for a given ISA path).
// With op(A) = A and few columns (N <= 8 nr-slivers, NHWC 1x1 convs), A's rows are read in
// place rather than packed; the results are bitwise those of the packed path. The environment
// variable CNNEXT_GEMM_DIRECT_A (read per call) overrides that choice for tests and
// measurements: "0" always packs op(A), "1" reads it in place whenever op(A) = A, "auto" or
// unset chooses by shape.
// Implementation: gemm.cpp (driver, Goto/BLIS blocking), pack.h, microkernel.h (kernel
// contract), kernel_avx512.cpp / kernel_avx2.cpp / kernel_portable.cpp (run-time dispatch).
#include <cstdint>
#include <string>

namespace cnnext::cpu {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

// The best ISA this machine supports, narrowed by the CNNEXT_ISA environment variable
// ("avx512", "avx2", "portable"; "avx512bf16" and "amx" as "avx512") when set.
Isa active_isa();
// What the machine itself supports (ignores CNNEXT_ISA).
Isa best_supported_isa();
Isa parse_isa(const std::string& name);  // "auto" gives active_isa()
const char* isa_name(Isa isa);

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

namespace gemm_detail {
template <typename T>
struct KernelSet;
}
// The micro-kernels of an ISA (microkernel.h), for callers that drive them directly
// (Winograd's products, the implicit-GEMM convolution).
template <typename T>
const gemm_detail::KernelSet<T>& gemm_kernels(Isa isa);

// Same, with the ISA forced (tests use this to cover every micro-kernel path).
template <typename T>
void gemm_isa(Isa isa, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
              const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace cnnext::cpu
