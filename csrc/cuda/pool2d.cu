// Pooling kernels: one thread per result element, grid-stride. Threads walk elements in memory
// order of the layout (NCHW or channels_last) so loads and stores coalesce. Backward kernels
// gather over the windows covering each input element: no atomics, bit-identical results.
#include "../common/pool_windows.h"
#include "pool2d_launch.h"

namespace cnnext::cuda {
namespace {

constexpr int kThreads = 256;

struct Pos {
  int64_t n, c, y, x;
};

// Position of the i-th element in memory order of a [batch, channels, h, w] tensor.
__device__ __forceinline__ Pos decode(int64_t i, int64_t C, int64_t H, int64_t W, bool cl) {
  Pos p;
  if (cl) {
    p.c = i % C; i /= C;
    p.x = i % W; i /= W;
    p.y = i % H; p.n = i / H;
  } else {
    p.x = i % W; i /= W;
    p.y = i % H; i /= H;
    p.c = i % C; p.n = i / C;
  }
  return p;
}

// Offset of (n, c, y, x) in a [batch, C, H, W] tensor of the layout.
__device__ __forceinline__ int64_t offset(int64_t n, int64_t c, int64_t y, int64_t x, int64_t C,
                                          int64_t H, int64_t W, bool cl) {
  return cl ? ((n * H + y) * W + x) * C + c : ((n * C + c) * H + y) * W + x;
}

// Window rows [begin, end) with step for output row o (dilation-aware for max pooling).
struct Window {
  int64_t y0, y1, ystep, x0, x1, xstep;
};

// Window bounds come from csrc/common/pool_windows.h, the definitions the CPU kernels use.
__device__ __forceinline__ Window max_window(const PoolGeometry& g, bool adaptive, int64_t oy,
                                             int64_t ox) {
  const PoolRange rh = adaptive ? adaptive_range(oy, g.out_h, g.in_h)
                                : max_pool_range(oy, g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dil_h);
  const PoolRange rw = adaptive ? adaptive_range(ox, g.out_w, g.in_w)
                                : max_pool_range(ox, g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dil_w);
  return Window{rh.begin, rh.end, rh.step, rw.begin, rw.end, rw.step};
}

template <typename T>
__global__ void max_pool_forward_kernel(const T* in, T* out, int64_t* indices, PoolGeometry g,
                                        bool adaptive) {
  const int64_t total = g.batch * g.channels * g.out_h * g.out_w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pos o = decode(i, g.channels, g.out_h, g.out_w, g.channels_last);
    const Window w = max_window(g, adaptive, o.y, o.x);
    acc_t<T> best = neg_inf<T>();
    int64_t best_index = w.y0 * g.in_w + w.x0;  // valid even when every value is -inf
    for (int64_t y = w.y0; y < w.y1; y += w.ystep) {
      for (int64_t x = w.x0; x < w.x1; x += w.xstep) {
        const acc_t<T> v = to_acc(in[offset(o.n, o.c, y, x, g.channels, g.in_h, g.in_w, g.channels_last)]);
        if (v > best || is_nan(v)) {  // first maximum wins; NaN propagates (last NaN, as torch)
          best = v;
          best_index = y * g.in_w + x;
        }
      }
    }
    out[i] = from_acc<T>(best);
    indices[i] = best_index;
  }
}

// Output rows whose window may cover input row y: a superset; callers check membership. The
// adaptive case inverts adaptive_range exactly: o covers y iff floor(y*out/in) <= o < ceil((y+1)*out/in).
__device__ __forceinline__ void covering(int64_t y, int64_t in, int64_t out, int64_t kernel_eff,
                                         int64_t stride, int64_t pad, bool adaptive, int64_t* lo,
                                         int64_t* hi) {
  if (adaptive) {
    *lo = (y * out) / in;
    *hi = ((y + 1) * out + in - 1) / in;
  } else {
    *lo = (y + pad < kernel_eff) ? 0 : (y + pad - kernel_eff) / stride + 1;
    *hi = (y + pad) / stride + 1;
  }
  if (*hi > out) *hi = out;
}

// Whether input row y is one of output row o's window taps. An output whose window holds no
// input element records an index that may name an element it never read (torch's rule); the
// tap test keeps its gradient out.
__device__ __forceinline__ bool is_tap(int64_t y, int64_t o, int64_t kernel_eff, int64_t stride,
                                       int64_t pad, int64_t dil) {
  const int64_t d = y + pad - o * stride;
  return d >= 0 && d < kernel_eff && d % dil == 0;
}

template <typename T>
__global__ void max_pool_backward_kernel(const T* grad_out, const int64_t* indices, T* grad_in,
                                         PoolGeometry g, bool adaptive) {
  const int64_t total = g.batch * g.channels * g.in_h * g.in_w;
  const int64_t keff_h = (g.kernel_h - 1) * g.dil_h + 1, keff_w = (g.kernel_w - 1) * g.dil_w + 1;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pos p = decode(i, g.channels, g.in_h, g.in_w, g.channels_last);
    int64_t y0, y1, x0, x1;
    covering(p.y, g.in_h, g.out_h, keff_h, g.stride_h, g.pad_h, adaptive, &y0, &y1);
    covering(p.x, g.in_w, g.out_w, keff_w, g.stride_w, g.pad_w, adaptive, &x0, &x1);
    const int64_t target = p.y * g.in_w + p.x;
    acc_t<T> s = 0;
    for (int64_t oy = y0; oy < y1; ++oy) {
      if (!adaptive && !is_tap(p.y, oy, keff_h, g.stride_h, g.pad_h, g.dil_h)) continue;
      for (int64_t ox = x0; ox < x1; ++ox) {
        if (!adaptive && !is_tap(p.x, ox, keff_w, g.stride_w, g.pad_w, g.dil_w)) continue;
        const int64_t o = offset(p.n, p.c, oy, ox, g.channels, g.out_h, g.out_w, g.channels_last);
        if (indices[o] == target) s += to_acc(grad_out[o]);
      }
    }
    grad_in[i] = from_acc<T>(s);
  }
}

// torch's average window: clipped to [-pad, in + pad) for the count_include_pad divisor, then
// to the image for the sum. Returns false for a window with no element (result 0).
struct AvgWindow {
  int64_t y0, y1, x0, x1, divisor;
};

__device__ __forceinline__ bool avg_window(const PoolGeometry& g, const AvgPoolRule& r,
                                           int64_t oy, int64_t ox, AvgWindow* w) {
  const PoolRange rh = avg_pool_range(oy, g.in_h, g.kernel_h, g.stride_h, g.pad_h);
  const PoolRange rw = avg_pool_range(ox, g.in_w, g.kernel_w, g.stride_w, g.pad_w);
  if (rh.begin >= rh.end || rw.begin >= rw.end) return false;
  w->y0 = rh.begin; w->y1 = rh.end; w->x0 = rw.begin; w->x1 = rw.end;
  w->divisor = avg_pool_divisor(rh, rw, r.count_include_pad, r.divisor_override != 0,
                                r.divisor_override);
  return true;
}

__device__ __forceinline__ AvgWindow adaptive_window(const PoolGeometry& g, int64_t oy, int64_t ox) {
  const PoolRange rh = adaptive_range(oy, g.out_h, g.in_h), rw = adaptive_range(ox, g.out_w, g.in_w);
  return AvgWindow{rh.begin, rh.end, rw.begin, rw.end, rh.extent * rw.extent};
}

template <typename T>
__global__ void avg_pool_forward_kernel(const T* in, T* out, PoolGeometry g, AvgPoolRule r,
                                        bool adaptive) {
  const int64_t total = g.batch * g.channels * g.out_h * g.out_w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pos o = decode(i, g.channels, g.out_h, g.out_w, g.channels_last);
    AvgWindow w;
    if (adaptive) {
      w = adaptive_window(g, o.y, o.x);
    } else if (!avg_window(g, r, o.y, o.x, &w)) {
      out[i] = zero_value<T>();
      continue;
    }
    acc_t<T> s = 0;
    for (int64_t y = w.y0; y < w.y1; ++y)
      for (int64_t x = w.x0; x < w.x1; ++x)
        s += to_acc(in[offset(o.n, o.c, y, x, g.channels, g.in_h, g.in_w, g.channels_last)]);
    out[i] = from_acc<T>(s / static_cast<acc_t<T>>(w.divisor));
  }
}

template <typename T>
__global__ void avg_pool_backward_kernel(const T* grad_out, T* grad_in, PoolGeometry g,
                                         AvgPoolRule r, bool adaptive) {
  const int64_t total = g.batch * g.channels * g.in_h * g.in_w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pos p = decode(i, g.channels, g.in_h, g.in_w, g.channels_last);
    int64_t y0, y1, x0, x1;
    covering(p.y, g.in_h, g.out_h, g.kernel_h, g.stride_h, g.pad_h, adaptive, &y0, &y1);
    covering(p.x, g.in_w, g.out_w, g.kernel_w, g.stride_w, g.pad_w, adaptive, &x0, &x1);
    acc_t<T> s = 0;
    for (int64_t oy = y0; oy < y1; ++oy)
      for (int64_t ox = x0; ox < x1; ++ox) {
        AvgWindow w;
        if (adaptive) {
          w = adaptive_window(g, oy, ox);
        } else if (!avg_window(g, r, oy, ox, &w)) {
          continue;
        }
        if (p.y < w.y0 || p.y >= w.y1 || p.x < w.x0 || p.x >= w.x1) continue;
        const int64_t o = offset(p.n, p.c, oy, ox, g.channels, g.out_h, g.out_w, g.channels_last);
        s += to_acc(grad_out[o]) / static_cast<acc_t<T>>(w.divisor);
      }
    grad_in[i] = from_acc<T>(s);
  }
}

template <typename F>
cudaError_t dispatch(DType d, const F& f) {
  switch (d) {
    case DType::kHalf: f(__half()); break;
    case DType::kBFloat16: f(__nv_bfloat16()); break;
    case DType::kFloat: f(float()); break;
    case DType::kDouble: f(double()); break;
  }
  return cudaGetLastError();
}

int64_t out_elems(const PoolGeometry& g) { return g.batch * g.channels * g.out_h * g.out_w; }
int64_t in_elems(const PoolGeometry& g) { return g.batch * g.channels * g.in_h * g.in_w; }

}  // namespace

cudaError_t launch_max_pool_forward(const void* in, void* out, int64_t* indices,
                                    const PoolGeometry& g, bool adaptive, DType d, cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    max_pool_forward_kernel<T><<<grid_for(out_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(in), static_cast<T*>(out), indices, g, adaptive);
  });
}

cudaError_t launch_max_pool_backward(const void* grad_out, const int64_t* indices, void* grad_in,
                                     const PoolGeometry& g, bool adaptive, DType d,
                                     cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    max_pool_backward_kernel<T><<<grid_for(in_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(grad_out), indices, static_cast<T*>(grad_in), g, adaptive);
  });
}

cudaError_t launch_avg_pool_forward(const void* in, void* out, const PoolGeometry& g,
                                    const AvgPoolRule& r, DType d, cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_forward_kernel<T><<<grid_for(out_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(in), static_cast<T*>(out), g, r, false);
  });
}

cudaError_t launch_avg_pool_backward(const void* grad_out, void* grad_in, const PoolGeometry& g,
                                     const AvgPoolRule& r, DType d, cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_backward_kernel<T><<<grid_for(in_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(grad_out), static_cast<T*>(grad_in), g, r, false);
  });
}

cudaError_t launch_adaptive_avg_pool_forward(const void* in, void* out, const PoolGeometry& g,
                                             DType d, cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_forward_kernel<T><<<grid_for(out_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(in), static_cast<T*>(out), g, AvgPoolRule{false, 0}, true);
  });
}

cudaError_t launch_adaptive_avg_pool_backward(const void* grad_out, void* grad_in,
                                              const PoolGeometry& g, DType d, cudaStream_t s) {
  return dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_backward_kernel<T><<<grid_for(in_elems(g), kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(grad_out), static_cast<T*>(grad_in), g, AvgPoolRule{false, 0},
        true);
  });
}

}  // namespace cnnext::cuda
