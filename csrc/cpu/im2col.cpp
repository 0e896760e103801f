#include "im2col.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

// Keep the short copy/zero loops below inline: GCC would otherwise turn them into memcpy /
// memset calls, which cost more than the 10..60-element rows of small layers.
#pragma GCC optimize("no-tree-loop-distribute-patterns")

namespace cnnext::cpu {
namespace {

// Output columns ox in [lo, hi) read inside the image for kernel column kj; the rest read
// padding. Computed once per row instead of testing every pixel.
inline void valid_range(int64_t out_w, int64_t in_w, int64_t offset, int64_t stride,
                        int64_t& lo, int64_t& hi) {
  // in_x = ox * stride + offset must satisfy 0 <= in_x < in_w
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = in_w - offset <= 0 ? 0 : (in_w - offset + stride - 1) / stride;
  lo = std::min(lo, out_w);
  hi = std::clamp(hi, lo, out_w);
}

// Copies n elements in 16-byte blocks, the last block overlapping the previous one: no
// alignment peel and no scalar tail, which dominate for the 10..60-pixel rows of small layers.
template <typename T>
inline void copy_short(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  constexpr int64_t B = 16 / sizeof(T);
  if (n < B) {
    for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
    return;
  }
  int64_t j = 0;
  for (; j + B <= n; j += B) __builtin_memcpy(dst + j, src + j, 16);
  if (j < n) __builtin_memcpy(dst + n - B, src + n - B, 16);
}

// One column-matrix row segment of out_w pixels: zeros, the in-image run, zeros. A library
// call per segment would cost more than the copy for short rows.
template <typename T>
inline void fill_col_row(T* __restrict__ out, const T* __restrict__ in_row, int64_t out_w,
                         int64_t lo, int64_t hi, int64_t stride_w, int64_t x_off) {
  for (int64_t ox = 0; ox < lo; ++ox) out[ox] = T(0);
  if (stride_w == 1) {
    if (hi - lo >= 256)
      std::memcpy(out + lo, in_row + x_off + lo, sizeof(T) * (hi - lo));
    else
      copy_short(out + lo, in_row + x_off + lo, hi - lo);
  } else if (stride_w == 2) {
    const T* src = in_row + x_off;
    for (int64_t ox = lo; ox < hi; ++ox) out[ox] = src[2 * ox];
  } else {
    for (int64_t ox = lo; ox < hi; ++ox) out[ox] = in_row[ox * stride_w + x_off];
  }
  for (int64_t ox = hi; ox < out_w; ++ox) out[ox] = T(0);
}

}  // namespace

template <typename T>
void im2col(const T* image, const ColShape& s, const ColSlice& slice, T* col) {
  const int64_t kk = s.kernel_h * s.kernel_w;
  const int64_t rows = (slice.c1 - slice.c0) * kk;
  // Small slices stay on the calling thread: a parallel region costs more than the copy.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, (slice.oy1 - slice.oy0) * s.out_w));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    // Locals, not reads through references: the byte copies below may alias any memory, which
    // would reload every field per row segment.
    const int64_t in_h = s.in_h, in_w = s.in_w, out_w = s.out_w, kw = s.kernel_w;
    const int64_t kh = s.kernel_h, stride_h = s.stride_h, stride_w = s.stride_w;
    const int64_t pad_h = s.pad_h, pad_w = s.pad_w, dil_h = s.dilation_h, dil_w = s.dilation_w;
    const int64_t c0 = slice.c0, oy0 = slice.oy0, oy1 = slice.oy1, ld = slice.ld;
    const int64_t kk = kh * kw;
    const T* const image_l = image;
    T* const col_l = col;
    // (c, ki, kj) of row r, stepped rather than divided out per row.
    int64_t kj = begin % kw, ki = (begin / kw) % kh, c = c0 + begin / kk;
    for (int64_t r = begin; r < end; ++r, ++kj) {
      if (kj == kw) {
        kj = 0;
        if (++ki == kh) {
          ki = 0;
          ++c;
        }
      }
      const T* src = image_l + c * in_h * in_w;
      T* dst = col_l + r * ld;
      const int64_t x_off = kj * dil_w - pad_w;
      int64_t lo, hi;
      valid_range(out_w, in_w, x_off, stride_w, lo, hi);
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        const int64_t iy = oy * stride_h + ki * dil_h - pad_h;
        T* out_row = dst + (oy - oy0) * out_w;
        if (iy < 0 || iy >= in_h)
          fill_col_row(out_row, src, out_w, out_w, out_w, stride_w, x_off);
        else
          fill_col_row(out_row, src + iy * in_w, out_w, lo, hi, stride_w, x_off);
      }
    }
  });
}

template <typename T>
void col2im_add(const T* col, const ColShape& s, const ColSlice& slice, T* image) {
  const int64_t kk = s.kernel_h * s.kernel_w;
  at::parallel_for(slice.c0, slice.c1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* dst = image + c * s.in_h * s.in_w;
      for (int64_t k = 0; k < kk; ++k) {
        const int64_t ki = k / s.kernel_w, kj = k % s.kernel_w;
        const T* src = col + ((c - slice.c0) * kk + k) * slice.ld;
        const int64_t x_off = kj * s.dilation_w - s.pad_w;
        int64_t lo, hi;
        valid_range(s.out_w, s.in_w, x_off, s.stride_w, lo, hi);
        for (int64_t oy = slice.oy0; oy < slice.oy1; ++oy) {
          const int64_t iy = oy * s.stride_h + ki * s.dilation_h - s.pad_h;
          if (iy < 0 || iy >= s.in_h) continue;
          T* in_row = dst + iy * s.in_w;
          const T* col_row = src + (oy - slice.oy0) * s.out_w;
          if (s.stride_w == 1) {
            for (int64_t ox = lo; ox < hi; ++ox) in_row[ox + x_off] += col_row[ox];
          } else {
            const int64_t sw = s.stride_w;
            for (int64_t ox = lo; ox < hi; ++ox) in_row[ox * sw + x_off] += col_row[ox];
          }
        }
      }
    }
  });
}

template void im2col<float>(const float*, const ColShape&, const ColSlice&, float*);
template void im2col<double>(const double*, const ColShape&, const ColSlice&, double*);
template void col2im_add<float>(const float*, const ColShape&, const ColSlice&, float*);
template void col2im_add<double>(const double*, const ColShape&, const ColSlice&, double*);

}  // namespace cnnext::cpu
