#include "im2col.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

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

}  // namespace

template <typename T>
void im2col(const T* image, const ColShape& s, const ColSlice& slice, T* col) {
  const int64_t kk = s.kernel_h * s.kernel_w;
  const int64_t rows = (slice.c1 - slice.c0) * kk;
  // Small slices stay on the calling thread: a parallel region costs more than the copy.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, (slice.oy1 - slice.oy0) * s.out_w));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t kj = r % s.kernel_w;
      const int64_t ki = (r / s.kernel_w) % s.kernel_h;
      const int64_t c = slice.c0 + r / kk;
      const T* src = image + c * s.in_h * s.in_w;
      T* dst = col + r * slice.ld;
      const int64_t x_off = kj * s.dilation_w - s.pad_w;
      int64_t lo, hi;
      valid_range(s.out_w, s.in_w, x_off, s.stride_w, lo, hi);
      for (int64_t oy = slice.oy0; oy < slice.oy1; ++oy) {
        const int64_t iy = oy * s.stride_h + ki * s.dilation_h - s.pad_h;
        T* out_row = dst + (oy - slice.oy0) * s.out_w;
        if (iy < 0 || iy >= s.in_h) {
          std::fill(out_row, out_row + s.out_w, T(0));
          continue;
        }
        const T* in_row = src + iy * s.in_w;
        std::fill(out_row, out_row + lo, T(0));
        if (s.stride_w == 1) {
          std::memcpy(out_row + lo, in_row + lo + x_off, sizeof(T) * (hi - lo));
        } else {
          const int64_t sw = s.stride_w;
          for (int64_t ox = lo; ox < hi; ++ox) out_row[ox] = in_row[ox * sw + x_off];
        }
        std::fill(out_row + hi, out_row + s.out_w, T(0));
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
