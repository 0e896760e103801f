#pragma once
// im2col / col2im for one image. The column matrix has one row per (channel, ki, kj) and one
// column per output pixel: col[(c*kh + ki)*kw + kj][oy*out_w + ox].
#include <cstdint>

namespace cnnext::cpu {

struct ColShape {
  int64_t channels, in_h, in_w;
  int64_t kernel_h, kernel_w;
  int64_t pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
};

// Writes every element of col (zero where the window reads padding).
template <typename T>
void im2col(const T* image, const ColShape& s, T* col);

// image = sum of the column entries that read each pixel. Every element of image is written;
// threads split the channels, so no two threads ever add into the same pixel.
template <typename T>
void col2im(const T* col, const ColShape& s, T* image);

}  // namespace cnnext::cpu
