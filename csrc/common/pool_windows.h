#pragma once
// Pooling window bounds: the input rows (or columns) each output reads. Plain C++ with no torch
// headers, so the CUDA kernels (csrc/cuda/pool2d.cu, compiled by nvcc without torch) and the CPU
// kernels (through pool_shapes.h) share one definition.
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CNNEXT_HOST_DEVICE __host__ __device__
#else
#define CNNEXT_HOST_DEVICE
#endif

namespace cnnext {

// The input rows (or columns) one output row reads: begin, begin + step, ... < end.
// extent is the window's length clipped to [-pad, in + pad): average pooling's
// count_include_pad divisor (a ceil-mode overhang past the right padding is not counted).
struct PoolRange {
  int64_t begin, end, step, extent;
};

// Max pooling: dilated window clipped to the input; a negative start moves forward by whole
// dilation steps (clamping to 0 would read the wrong taps).
CNNEXT_HOST_DEVICE inline PoolRange max_pool_range(int64_t o, int64_t in, int64_t kernel,
                                                   int64_t stride, int64_t pad, int64_t dilation) {
  int64_t begin = o * stride - pad;
  const int64_t window_end = begin + (kernel - 1) * dilation + 1;
  const int64_t end = window_end < in ? window_end : in;
  if (begin < 0) begin += ((-begin + dilation - 1) / dilation) * dilation;
  return PoolRange{begin, end, dilation, 0};
}

// Average pooling: window [o*stride - pad, + kernel) clipped to [-pad, in + pad) for the
// divisor, then to [0, in) for the elements summed.
CNNEXT_HOST_DEVICE inline PoolRange avg_pool_range(int64_t o, int64_t in, int64_t kernel,
                                                   int64_t stride, int64_t pad) {
  const int64_t begin = o * stride - pad;
  const int64_t end = begin + kernel < in + pad ? begin + kernel : in + pad;
  return PoolRange{begin > 0 ? begin : 0, end < in ? end : in, 1, end - begin};
}

// Adaptive pooling: output o of out over in reads [floor(o*in/out), ceil((o+1)*in/out)).
// Note the argument order (o, out, in).
CNNEXT_HOST_DEVICE inline int64_t adaptive_start(int64_t o, int64_t out, int64_t in) {
  return (o / out) * in + ((o % out) * in) / out;
}
CNNEXT_HOST_DEVICE inline int64_t adaptive_end(int64_t o, int64_t out, int64_t in) {
  return 1 + ((o + 1) * in - 1) / out;
}
CNNEXT_HOST_DEVICE inline PoolRange adaptive_range(int64_t o, int64_t out, int64_t in) {
  const int64_t begin = adaptive_start(o, out, in), end = adaptive_end(o, out, in);
  return PoolRange{begin, end, 1, end - begin};
}

// avg_pool2d's divisor for a window (the summed area is (rh.end-rh.begin)*(rw.end-rw.begin)).
CNNEXT_HOST_DEVICE inline int64_t avg_pool_divisor(const PoolRange& rh, const PoolRange& rw,
                                                   bool count_include_pad, bool has_divisor,
                                                   int64_t divisor_override) {
  if (has_divisor) return divisor_override;
  if (count_include_pad) return rh.extent * rw.extent;
  return (rh.end - rh.begin) * (rw.end - rw.begin);
}

}  // namespace cnnext
