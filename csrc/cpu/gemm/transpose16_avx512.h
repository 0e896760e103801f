#pragma once
// 16 x 16 float transposes in zmm registers (unpack, 64-bit unpack, two 128-bit lane
// shuffles). Include only inside an AVX-512 target region and an anonymous namespace, like
// microkernel_simd.h: nothing compiled for AVX-512 may be shared with the generic build.

// In place: r[j] becomes column j of the 16 x 16 block whose rows were r[0..15].
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Per 128-bit lane l, r[4 i + c] then holds column 4 l + c of rows 4 i .. 4 i + 3.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  __m512 out[16];
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512 a = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    const __m512 b = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
    const __m512 e = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 f = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    out[c] = _mm512_shuffle_f32x4(a, e, 0x88);
    out[8 + c] = _mm512_shuffle_f32x4(a, e, 0xdd);
    out[4 + c] = _mm512_shuffle_f32x4(b, f, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(b, f, 0xdd);
  }
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) r[j] = out[j];
}

// r[j] = column j (j < kk) of the rows x kk block at src (row stride ld); rows past `rows`
// read as zeros.
inline void load_transposed(const float* src, int64_t ld, int64_t rows, int64_t kk, __m512 r[16]) {
  const __mmask16 cols = static_cast<__mmask16>((1u << kk) - 1);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_ps(cols, src + i * ld) : _mm512_setzero_ps();
  transpose16(r);
}
