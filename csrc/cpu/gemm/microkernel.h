#pragma once
// Internal contract between the GEMM driver (gemm.cpp) and the per-ISA micro-kernels.
//
// A micro-kernel computes one tile of C from packed operands:
//   C[i][j] = alpha * sum_k a[k*mr + i] * b[k*ldb + j] + beta * C[i][j]
// for i < rows (fixed per kernel, <= mr) and j < n (n <= nr). beta == 0 never reads C.
// The kernel reads all nr columns of b (the driver zero-pads partial slivers, so no read ever
// leaves a buffer) and only `rows` rows of a. Each C element is one FMA chain over k in order,
// so the result does not depend on the tile (or thread) that computed it.
#include <cstdint>

namespace cnnext::cpu::gemm_detail {

constexpr int kMaxMR = 16;

template <typename T>
using MicroKernel = void (*)(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, int64_t ldc,
                             T alpha, T beta, int64_t n);

// The same tile with row k of b at b + b_offset[k] instead of b + k*ldb: an implicit im2col,
// where b is a padded image and the offsets step through (channel, kernel row, kernel column)
// (implicit_conv2d.h). Every read stays below b + max(b_offset) + nr.
template <typename T>
using OffsetMicroKernel = void (*)(int64_t kc, const T* a, const T* b, const int64_t* b_offset,
                                   T* c, int64_t ldc, T alpha, T beta, int64_t n);

// The same tile with A read in place instead of packed: element (k, i) at a[i*lda + k]
// (op(A) = A, not transposed). Only `rows` rows of a are read, each for kc elements, so a
// partial sliver needs no padding. Same FMA order as MicroKernel: bit-identical results.
template <typename T>
using DirectAMicroKernel = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb,
                                    T* c, int64_t ldc, T alpha, T beta, int64_t n);

// Dot-product tile for op(A) * op(B) with both operands contiguous along K (A not transposed,
// B transposed): C[i][j] = alpha * dot(a + i*lda, b + j*ldb) + beta * C[i][j] for i < m,
// j < n, with m, n <= kDotTile. No packing: for small M and N with large K (conv grad_weight)
// packing would cost more than the FMAs. Lanes are reduced in a fixed order.
constexpr int kDotTile = 4;
template <typename T>
using DotKernel = void (*)(int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                           int64_t ldc, T alpha, T beta, int64_t m, int64_t n);

// The same on rows anywhere: C[i][j] = alpha * dot(a_rows[i], b_rows[j]) + beta * C[i][j]
// (i < m, j < n; a_rows and b_rows hold kDotTile pointers, those past m / n unused).
template <typename T>
using DotRowsKernel = void (*)(int64_t K, const T* const* a_rows, const T* const* b_rows, T* c,
                               int64_t ldc, T alpha, T beta, int64_t m, int64_t n);

// A trivial aggregate on purpose (no member initializers, so no inline constructor): the SIMD
// translation units build these under a target pragma, and an AVX-512-compiled constructor
// must never be the copy the linker keeps. Value-initialise: `KernelSet<T> ks{};`.
template <typename T>
struct KernelSet {
  int mr;          // rows per packed sliver of op(A)
  int nr;          // columns per packed sliver of op(B)
  int64_t mc;      // rows of op(A) packed per block (multiple of mr)
  int64_t kc;      // depth of one packed block
  int64_t nc;      // columns of op(B) packed per block (multiple of nr; sized for L2)
  MicroKernel<T> rows[kMaxMR + 1];  // rows[m] computes an m-row tile, 1 <= m <= mr
  OffsetMicroKernel<T> offset_rows[kMaxMR + 1];  // the same with offset-addressed rows of b
  DirectAMicroKernel<T> direct_a_rows[kMaxMR + 1];  // the same with a read in place
  DotKernel<T> dot;                 // optional (SIMD paths only; null otherwise)
  DotRowsKernel<T> dot_rows;        // optional, likewise
  // Optional: packs op(A) = A (rows contiguous along k; A at the block's first element) into
  // mr-row slivers exactly as pack_a (pack.h) does, whole slivers of mr rows written (rows past
  // mc as zeros). Null: pack_a.
  void (*pack_a_rows)(const T* A, int64_t lda, int64_t mc, int64_t kc, T* dst);
  // Optional: packs op(B) = B^T (B's rows, contiguous along k, are op(B)'s columns; B at the
  // block's first element) into all nr-column slivers of an nc-wide block exactly as pack_b
  // (pack.h) does, zero columns past nc included. Null: pack_b.
  void (*pack_b_cols)(const T* B, int64_t ldb, int64_t kc, int64_t nc, T* dst);
};

const KernelSet<float>& avx512_kernels_f32();
const KernelSet<double>& avx512_kernels_f64();
const KernelSet<float>& avx2_kernels_f32();
const KernelSet<double>& avx2_kernels_f64();
const KernelSet<float>& portable_kernels_f32();
const KernelSet<double>& portable_kernels_f64();

}  // namespace cnnext::cpu::gemm_detail
