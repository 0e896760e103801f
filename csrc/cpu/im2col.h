#pragma once
// im2col / col2im over a slice of one image: channels [c0, c1) and output rows [oy0, oy1).
// The column matrix has one row per (channel, ki, kj) and one column per output pixel of the
// slice: col[((c - c0)*kh + ki)*kw + kj][(oy - oy0)*out_w + ox], rows ld elements apart, so
// several images' slices can sit side by side in one wider matrix.
#include <cstdint>

namespace cnnext::cpu {

struct ColShape {
  int64_t channels, in_h, in_w;
  int64_t kernel_h, kernel_w;
  int64_t pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
};

struct ColSlice {
  int64_t c0, c1;    // channels of the image
  int64_t oy0, oy1;  // output rows
  int64_t ld;        // elements between column-matrix rows
};

// Writes every element of the slice (zero where the window reads padding).
template <typename T>
void im2col(const T* image, const ColShape& s, const ColSlice& slice, T* col);

// image += the column entries of the slice, for every pixel they read. Threads split the
// channels, so no two threads add into the same pixel, and each pixel's sum is formed in a
// fixed (ki, kj, oy, ox) order: bit-identical results run to run.
template <typename T>
void col2im_add(const T* col, const ColShape& s, const ColSlice& slice, T* image);

}  // namespace cnnext::cpu
