#pragma once
// bfloat16 products on AVX512-BF16's pair dot product (vdpbf16ps): each float32 lane adds
// a[2j] * b[2j] + a[2j+1] * b[2j+1] of two bfloat16 vectors, so both operands are stored as
// pairs along the reduction:
//   A slivers: kMR rows, element (kp, i) = the pair (A[i][2kp], A[i][2kp+1]) at [kp][i]
//              (gemm_kernels<float>(Isa::Avx512).pack_a_rows packs them: a pair is 32 bits);
//   B panels:  kNR columns, element (kp, j) = the pair (B[2kp][j], B[2kp+1][j]) at [kp][j].
// Accumulation is float32 over the whole reduction in one pass (no K blocks), rounded once to
// bfloat16 (round to nearest even) in the epilogue. Like every AVX512-BF16 unit, vdpbf16ps
// treats bfloat16 denormal inputs as zero and flushes denormal results.
#include <cstdint>

namespace cnnext::cpu::bf16 {

constexpr int kMR = 14;  // rows per A sliver (the float32 AVX-512 packer's sliver height)
constexpr int kNR = 32;  // columns per B panel: two float32 vectors of accumulators

// Whether the CPU has AVX512-BF16 (and AVX-512F) and CNNEXT_ISA allows it: unset, "auto",
// "avx512bf16" or "amx". "avx512", "avx2" and "portable" route bfloat16 through float32.
bool dot_available();

// out[i][j] (i < rows <= kMR, j < n <= kNR) = sum over kp < kp_count of the pair products of
// a_sliver and b_panel, plus bias[j] (kNR floats, read whole). Written as bfloat16 bits at
// out + i * ld_out, or, with out_f32, as float32 at out_f32 + i * ld_out (out unused); with
// accumulate, added to what out_f32 holds (bias unused).
// Pair kp of row i is a_sliver[kp * a_stride + i] and pair kp of the panel's columns starts at
// b_panel + kp * b_stride (2 * kNR bfloat16 read, whole): a_stride = kMR and b_stride = 2 * kNR
// for packed operands, larger where the product reads pair-interleaved rows in place.
struct PanelProduct {
  int64_t kp_count;
  const uint32_t* a_sliver;
  int64_t a_stride;
  const uint16_t* b_panel;
  int64_t b_stride;
  const float* bias;
  int64_t rows, n, ld_out;
  uint16_t* out;
  float* out_f32;
  bool accumulate;
};
// Only on machines where dot_available() holds.
void panel_product(const PanelProduct& p);

// Rows 2i and 2i + 1 of `rows` rows (n bfloat16 each, ld apart) interleaved into n pairs at
// dst + 2i * n: dst[2i n + 2j] = row 2i [j], dst[2i n + 2j + 1] = row 2i+1 [j] (zeros for a
// missing last odd row). grad_weight's reduction runs over pixels in pairs. Only where
// dot_available() holds.
void interleave_row_pairs(const uint16_t* src, int64_t ld, int64_t rows, int64_t n,
                          uint16_t* dst);

// The register-only rate of vdpbf16ps on every thread (GFLOP/s, 2 per product): independent
// accumulators, no memory operands, `iterations` rounds of 12 instructions per thread. The
// benchmark suite's bfloat16 limit on CPUs without AMX. Only where dot_available() holds.
double dot_peak_gflops(int64_t iterations);

}  // namespace cnnext::cpu::bf16
