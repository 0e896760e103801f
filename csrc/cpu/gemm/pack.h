#pragma once
// Packing of op(A) and op(B) into the sliver layouts the micro-kernels read (microkernel.h).
// Transposes are resolved here, so the kernels see one layout for all four transpose cases.
#include <algorithm>
#include <cstdint>

#include "microkernel.h"

namespace cnnext::cpu::gemm_detail {

// Depth of the k chunks a transposing pack walks at a time.
constexpr int64_t kTransposeChunk = 64;

// A transposing pack reads many rows a chunk at a time, too many streams for the hardware
// prefetcher: ask for each row's next chunk (up to `left` elements) one chunk ahead.
template <typename T>
inline void prefetch_chunk(const T* next, int64_t left) {
  const int64_t n = std::min(left, kTransposeChunk);
  for (int64_t e = 0; e < n; e += 64 / sizeof(T)) __builtin_prefetch(next + e);
}

// op(A)[i0 : i0+mc, k0 : k0+kc] into slivers of mr rows: sliver s at dst + s*mr*kc, element
// (k, i) at k*mr + i. A partial last sliver is not padded (its kernel reads only its rows).
template <typename T>
void pack_a(bool trans, const T* A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc,
            int mr, T* dst) {
  for (int64_t s = 0; s < mc; s += mr) {
    const int64_t rows = std::min<int64_t>(mr, mc - s);
    T* d = dst + s * kc;
    if (!trans) {
      // A transpose: go through k in short chunks so the written lines stay in L1.
      for (int64_t kb = 0; kb < kc; kb += kTransposeChunk) {
        const int64_t ke = std::min(kc, kb + kTransposeChunk);
        for (int64_t i = 0; i < rows; ++i) {
          const T* src = A + (i0 + s + i) * lda + k0;
          prefetch_chunk(src + ke, kc - ke);
          for (int64_t k = kb; k < ke; ++k) d[k * mr + i] = src[k];
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A + (k0 + k) * lda + i0 + s;
        for (int64_t i = 0; i < rows; ++i) d[k * mr + i] = src[i];
      }
    }
  }
}

// op(B)[k0 : k0+kc, j0 + js*nr : ...] for slivers js in [js0, js1) of nr columns (out of nc
// columns in the block): sliver js at dst + js*kc*nr, element (k, j) at k*nr + j; columns past
// nc are zero so kernels may read whole slivers.
template <typename T>
void pack_b(bool trans, const T* B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc,
            int nr, int64_t js0, int64_t js1, T* dst) {
  for (int64_t js = js0; js < js1; ++js) {
    const int64_t c0 = js * nr;
    const int64_t cols = std::min<int64_t>(nr, nc - c0);
    T* d = dst + js * kc * nr;
    if (!trans) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B + (k0 + k) * ldb + j0 + c0;
        T* row = d + k * nr;
        for (int64_t j = 0; j < cols; ++j) row[j] = src[j];
        for (int64_t j = cols; j < nr; ++j) row[j] = T(0);
      }
    } else {
      for (int64_t kb = 0; kb < kc; kb += kTransposeChunk) {
        const int64_t ke = std::min(kc, kb + kTransposeChunk);
        for (int64_t j = 0; j < cols; ++j) {
          const T* src = B + (j0 + c0 + j) * ldb + k0;
          prefetch_chunk(src + ke, kc - ke);
          for (int64_t k = kb; k < ke; ++k) d[k * nr + j] = src[k];
        }
      }
      if (cols < nr)
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t j = cols; j < nr; ++j) d[k * nr + j] = T(0);
    }
  }
}

// pack_a through the ISA's own packer where it has one (a non-transposed A on AVX-512).
template <typename T>
void pack_a_with(const KernelSet<T>& ks, bool trans, const T* A, int64_t lda, int64_t i0,
                 int64_t k0, int64_t mc, int64_t kc, T* dst) {
  if (!trans && ks.pack_a_rows != nullptr)
    ks.pack_a_rows(A + i0 * lda + k0, lda, mc, kc, dst);
  else
    pack_a(trans, A, lda, i0, k0, mc, kc, ks.mr, dst);
}

}  // namespace cnnext::cpu::gemm_detail
