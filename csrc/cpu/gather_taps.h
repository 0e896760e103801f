#pragma once
// grad_input as a gather per input pixel: which taps of a strided convolution reach an input
// row, and which reach a column phase. Used by the grouped kernels' grad_input (float32 lanes and
// AVX512-BF16 pair dot products).
#include <cstdint>
#include <vector>

namespace cnnext::cpu {

// (r, oy) pairs, r ascending: kernel row r reaches input row iy from output row oy, where
// oy * stride = iy + pad - r * dilation and 0 <= oy < out_h.
inline void taps_reaching_row(std::vector<int64_t>& taps, int64_t iy, int64_t kernel,
                              int64_t stride, int64_t pad, int64_t dilation, int64_t out_h) {
  taps.clear();
  for (int64_t r = 0; r < kernel; ++r) {
    const int64_t t = iy + pad - r * dilation;
    if (t >= 0 && t % stride == 0 && t / stride < out_h) {
      taps.push_back(r);
      taps.push_back(t / stride);
    }
  }
}

// (s, shift) pairs, s ascending: kernel column s reaches the input columns ix = px + stride * j
// of phase px from output column ox = j + shift (which the caller bounds by [0, out_w)).
inline void taps_reaching_phase(std::vector<int64_t>& taps, int64_t px, int64_t kernel,
                                int64_t stride, int64_t pad, int64_t dilation) {
  taps.clear();
  for (int64_t s = 0; s < kernel; ++s) {
    const int64_t t = px + pad - s * dilation;
    if ((t % stride + stride) % stride == 0) {
      taps.push_back(s);
      taps.push_back(t >= 0 ? t / stride : -((-t + stride - 1) / stride));  // floor
    }
  }
}

}  // namespace cnnext::cpu
