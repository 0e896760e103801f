#pragma once
// NHWC column gathers for the im2col_nhwc row (conv_algo_im2col_nhwc.cpp). In NHWC a tap of
// one pixel is a contiguous run of channels, so a column row is kh*kw runs copied (or zeroed
// where the tap falls in the padding): no per-element index math.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// How many pixel-row chunks the row cuts `total` rows of `row_len` elements into (its
// workspace budget, chunk target and thread rounding): the cost model counts GEMM calls so.
int64_t im2col_nhwc_chunk_count(int64_t total, int64_t row_len, int64_t elem, int64_t threads);

// An NHWC activation (input or grad_output) and the channel slice of one group in it.
struct NhwcPlane {
  int64_t height, width, channels;  // channels: all of them (the row pitch of a pixel)
  int64_t c0, run;                  // the group's first channel and its channel count
};

template <typename T>
inline void copy_run(T* dst, const T* src, int64_t n) {
  if (n >= 32) {
    std::memcpy(dst, src, sizeof(T) * static_cast<size_t>(n));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];  // few channels (stems): no library call
}
template <typename T>
inline void zero_run(T* dst, int64_t n) {
  std::fill(dst, dst + n, T(0));
}

// Forward / grad_weight columns: rows [p0, p1) of the flat output pixel index (n, oh, ow),
// each row kernel_h * kernel_w runs of the input group slice, tap-major: col[p][kh][kw][c].
struct ForwardGather {
  NhwcPlane in;
  int64_t out_h, out_w, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// The forward gather of one group's channels.
inline ForwardGather forward_gather(const Conv2dGeometry& g, const Conv2dParams& p,
                                   int64_t group) {
  const int64_t cg = g.in_channels_per_group();
  return ForwardGather{{g.in_h, g.in_w, g.in_channels, group * cg, cg},
                       g.out_h, g.out_w, g.kernel_h, g.kernel_w,
                       p.stride[0], p.stride[1], p.padding[0], p.padding[1],
                       p.dilation[0], p.dilation[1]};
}

// Rows are row_pitch elements apart (default: packed), the pitch - row_len past each row
// zeroed (the bfloat16 products pad odd rows to whole pairs).
template <typename T>
void gather_forward_columns(const T* input, const ForwardGather& f, int64_t p0, int64_t p1,
                            T* col, int64_t row_pitch = -1) {
  const int64_t run = f.in.run, row_len = f.kernel_h * f.kernel_w * run;
  if (row_pitch < 0) row_pitch = row_len;
  const int64_t plane = f.out_h * f.out_w;
  // All channels of undilated taps: a kernel row's taps are contiguous in the input.
  const bool whole_pixels = run == f.in.channels && f.dil_w == 1;
  // The pixel's coordinates, stepped from p0's (no divisions per row).
  int64_t n = p0 / plane, oh = (p0 % plane) / f.out_w, ow = p0 % f.out_w;
  for (int64_t p = p0; p < p1; ++p, ++ow) {
    if (ow == f.out_w) {
      ow = 0;
      if (++oh == f.out_h) oh = 0, ++n;
    }
    T* dst = col + (p - p0) * row_pitch;
    if (row_pitch > row_len) zero_run(dst + row_len, row_pitch - row_len);
    const T* image = input + n * f.in.height * f.in.width * f.in.channels + f.in.c0;
    for (int64_t kh = 0; kh < f.kernel_h; ++kh) {
      const int64_t ih = oh * f.stride_h - f.pad_h + kh * f.dil_h;
      if (ih < 0 || ih >= f.in.height) {
        zero_run(dst, f.kernel_w * run);
        dst += f.kernel_w * run;
        continue;
      }
      const T* in_row = image + ih * f.in.width * f.in.channels;
      if (whole_pixels) {
        // The row's taps are kernel_w neighbouring pixels: one run, zeros where it overhangs.
        const int64_t iw0 = ow * f.stride_w - f.pad_w;
        const int64_t lo = std::max<int64_t>(0, -iw0);
        const int64_t hi = std::min(f.kernel_w, f.in.width - iw0);
        if (hi <= lo) {
          zero_run(dst, f.kernel_w * run);
        } else {
          zero_run(dst, lo * run);
          copy_run(dst + lo * run, in_row + (iw0 + lo) * run, (hi - lo) * run);
          zero_run(dst + hi * run, (f.kernel_w - hi) * run);
        }
        dst += f.kernel_w * run;
        continue;
      }
      for (int64_t kw = 0; kw < f.kernel_w; ++kw, dst += run) {
        const int64_t iw = ow * f.stride_w - f.pad_w + kw * f.dil_w;
        if (iw < 0 || iw >= f.in.width)
          zero_run(dst, run);
        else
          copy_run(dst, in_row + iw * f.in.channels, run);
      }
    }
  }
}

// One stride phase of grad_input: the input rows ih = ih0 + i * stride_h (i < rows) and
// columns iw = iw0 + j * stride_w (j < cols), and the taps that reach them (kh with
// (ih + pad_h - kh * dil_h) divisible by stride_h, the same along w).
struct InputPhase {
  int64_t ih0, rows, iw0, cols;
  const int64_t* taps_h;  // kernel rows of this phase, ascending
  int64_t ntaps_h;
  const int64_t* taps_w;
  int64_t ntaps_w;
  int64_t pixels_per_image() const { return rows * cols; }
};

// The stride phases of the input and the taps of each, in phase order (h-major): the NHWC
// grad_input passes compute one product per phase.
struct Phases {
  std::vector<int64_t> taps_h, taps_w;                 // kernel rows / columns, grouped by phase
  std::vector<int64_t> start_h, start_w;               // offsets of each phase's taps, size s+1
  std::vector<InputPhase> phases;                      // s_h * s_w
  std::vector<int64_t> tap_offset;                     // first tap of each phase (weight rows)

  Phases(const Phases&) = delete;  // phases point into the tap vectors
  Phases& operator=(const Phases&) = delete;
  Phases(const Conv2dGeometry& g, const Conv2dParams& p) {
    const int64_t sh = p.stride[0], sw = p.stride[1];
    group_taps(g.kernel_h, sh, p.dilation[0], taps_h, start_h);
    group_taps(g.kernel_w, sw, p.dilation[1], taps_w, start_w);
    int64_t offset = 0;
    for (int64_t a = 0; a < sh; ++a) {
      // The first ih >= 0 with (ih + pad) mod s == a, and how many rows follow it.
      const int64_t ih0 = ((a - p.padding[0]) % sh + sh) % sh;
      const int64_t rows = ih0 < g.in_h ? (g.in_h - 1 - ih0) / sh + 1 : 0;
      for (int64_t b = 0; b < sw; ++b) {
        const int64_t iw0 = ((b - p.padding[1]) % sw + sw) % sw;
        const int64_t cols = iw0 < g.in_w ? (g.in_w - 1 - iw0) / sw + 1 : 0;
        phases.push_back(InputPhase{ih0, rows, iw0, cols, nullptr, start_h[a + 1] - start_h[a],
                                    nullptr, start_w[b + 1] - start_w[b]});
        tap_offset.push_back(offset);
        offset += phases.back().ntaps_h * phases.back().ntaps_w;
      }
    }
    // Pointers last: the vectors no longer move.
    for (int64_t a = 0; a < sh; ++a)
      for (int64_t b = 0; b < sw; ++b) {
        phases[a * sw + b].taps_h = taps_h.data() + start_h[a];
        phases[a * sw + b].taps_w = taps_w.data() + start_w[b];
      }
  }

  // Taps k (ascending) grouped by (k * dilation) mod stride.
  static void group_taps(int64_t kernel, int64_t stride, int64_t dilation,
                         std::vector<int64_t>& taps, std::vector<int64_t>& start) {
    start.assign(stride + 1, 0);
    for (int64_t r = 0; r < stride; ++r) {
      start[r] = static_cast<int64_t>(taps.size());
      for (int64_t k = 0; k < kernel; ++k)
        if ((k * dilation) % stride == r) taps.push_back(k);
    }
    start[stride] = static_cast<int64_t>(taps.size());
  }
};

struct GradInputGather {
  NhwcPlane go;  // grad_output: height, width = out_h, out_w; run = out channels per group
  int64_t in_h, in_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// Input pixel q of the phase (flat over (n, i, j)) as its image and coordinates.
struct PhasePixel {
  int64_t n, ih, iw;
};
inline PhasePixel phase_pixel(const InputPhase& ph, int64_t stride_h, int64_t stride_w,
                              int64_t q) {
  const int64_t per_image = ph.pixels_per_image();
  const int64_t n = q / per_image, rem = q % per_image;
  return {n, ph.ih0 + (rem / ph.cols) * stride_h, ph.iw0 + (rem % ph.cols) * stride_w};
}

// grad_input columns of phase pixels [q0, q1): per pixel, for each of the phase's taps
// (kh-major), the grad_output run of the output pixel that tap connects, or zeros where that
// output pixel lies outside the map.
template <typename T>
void gather_grad_input_columns(const T* grad_output, const GradInputGather& f,
                               const InputPhase& ph, int64_t q0, int64_t q1, T* col) {
  const int64_t run = f.go.run;
  const int64_t row_len = ph.ntaps_h * ph.ntaps_w * run;
  for (int64_t q = q0; q < q1; ++q) {
    const auto [n, ih, iw] = phase_pixel(ph, f.stride_h, f.stride_w, q);
    T* dst = col + (q - q0) * row_len;
    const T* image = grad_output + n * f.go.height * f.go.width * f.go.channels + f.go.c0;
    for (int64_t a = 0; a < ph.ntaps_h; ++a) {
      // Divisible by construction of the phase; negative numerators are out of the map.
      const int64_t num_h = ih + f.pad_h - ph.taps_h[a] * f.dil_h;
      const int64_t oh = num_h / f.stride_h;
      if (num_h < 0 || oh >= f.go.height) {
        zero_run(dst, ph.ntaps_w * run);
        dst += ph.ntaps_w * run;
        continue;
      }
      const T* go_row = image + oh * f.go.width * f.go.channels;
      for (int64_t b = 0; b < ph.ntaps_w; ++b, dst += run) {
        const int64_t num_w = iw + f.pad_w - ph.taps_w[b] * f.dil_w;
        const int64_t ow = num_w / f.stride_w;
        if (num_w < 0 || ow >= f.go.width)
          zero_run(dst, run);
        else
          copy_run(dst, go_row + ow * f.go.channels, run);
      }
    }
  }
}

}  // namespace cnnext::cpu
