// The 16 x 16 float tile of layout_copy.h's transposes, compiled for AVX-512 through a target
// pragma (the package needs no -march flag); called only where the CPU has avx512f.
#include "layout_copy.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")

namespace cnnext::cpu {
namespace {
#include "gemm/transpose16_avx512.h"
}  // namespace

void transpose_tile_f32_avx512(const float* src, int64_t ld_src, int64_t nr, int64_t nc,
                               float* dst, int64_t ld_dst) {
  const __mmask16 rows = static_cast<__mmask16>((1u << nr) - 1);
  __m512 r[16];
  load_transposed(src, ld_src, nr, nc, r);
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j)
    if (j < nc) _mm512_mask_storeu_ps(dst + j * ld_dst, rows, r[j]);
}

}  // namespace cnnext::cpu

#pragma GCC pop_options
#else
namespace cnnext::cpu {
void transpose_tile_f32_avx512(const float*, int64_t, int64_t, int64_t, float*, int64_t) {}
}  // namespace cnnext::cpu
#endif
