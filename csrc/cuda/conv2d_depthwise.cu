// Direct kernels for depthwise conv2d (one input channel per group, out_c = multiplier * in_c)
// and the grad_bias reduction. Depthwise work per output is a few taps: memory-bound, so one
// thread per result element, reading any input strides (NCHW or channels_last).
// Backward gathers (grad_input) or reduces in a fixed order per block (grad_weight, grad_bias).
#include "block_reduce.cuh"
#include "conv2d_launch.h"

namespace cnnext::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void depthwise_forward_kernel(const DepthwiseArgs a) {
  const T* in = static_cast<const T*>(a.input);
  const T* w = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  T* out = static_cast<T*>(a.out);
  const int64_t total = a.batch * a.out_c * a.out_h * a.out_w;
  const int64_t mult = a.out_c / a.in_c;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ox = i % a.out_w, oy = (i / a.out_w) % a.out_h;
    const int64_t oc = (i / (a.out_w * a.out_h)) % a.out_c, n = i / (a.out_w * a.out_h * a.out_c);
    const int64_t ic = oc / mult;
    const T* plane = in + n * a.in_sn + ic * a.in_sc;
    const T* wk = w + oc * a.kernel_h * a.kernel_w;
    acc_t<T> s = bias != nullptr ? to_acc(bias[oc]) : acc_t<T>(0);
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      const int64_t iy = oy * a.stride_h - a.pad_h + kh * a.dil_h;
      if (iy < 0 || iy >= a.in_h) continue;
      for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
        const int64_t ix = ox * a.stride_w - a.pad_w + kw * a.dil_w;
        if (ix < 0 || ix >= a.in_w) continue;
        s += to_acc(plane[iy * a.in_sh + ix * a.in_sw]) * to_acc(wk[kh * a.kernel_w + kw]);
      }
    }
    out[i] = from_acc<T>(s);  // output is NCHW contiguous
  }
}

// grad_input (NCHW contiguous): each input element gathers the outputs whose taps touch it.
template <typename T>
__global__ void depthwise_dgrad_kernel(const DepthwiseArgs a) {
  const T* go = static_cast<const T*>(a.grad_out);
  const T* w = static_cast<const T*>(a.weight);
  T* gi = static_cast<T*>(a.out);
  const int64_t total = a.batch * a.in_c * a.in_h * a.in_w;
  const int64_t mult = a.out_c / a.in_c;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ix = i % a.in_w, iy = (i / a.in_w) % a.in_h;
    const int64_t ic = (i / (a.in_w * a.in_h)) % a.in_c, n = i / (a.in_w * a.in_h * a.in_c);
    acc_t<T> s = 0;
    for (int64_t oc = ic * mult; oc < (ic + 1) * mult; ++oc) {
      const T* plane = go + n * a.go_sn + oc * a.go_sc;
      const T* wk = w + oc * a.kernel_h * a.kernel_w;
      for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
        const int64_t ny = iy + a.pad_h - kh * a.dil_h;
        if (ny < 0 || ny % a.stride_h != 0 || ny / a.stride_h >= a.out_h) continue;
        const int64_t oy = ny / a.stride_h;
        for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
          const int64_t nx = ix + a.pad_w - kw * a.dil_w;
          if (nx < 0 || nx % a.stride_w != 0 || nx / a.stride_w >= a.out_w) continue;
          s += to_acc(plane[oy * a.go_sh + (nx / a.stride_w) * a.go_sw]) *
               to_acc(wk[kh * a.kernel_w + kw]);
        }
      }
    }
    gi[i] = from_acc<T>(s);
  }
}

// grad_weight: one block per (oc, kh, kw), a fixed-order sum over (n, oy, ox).
template <typename T>
__global__ void __launch_bounds__(kThreads) depthwise_wgrad_kernel(const DepthwiseArgs a) {
  const T* in = static_cast<const T*>(a.input);
  const T* go = static_cast<const T*>(a.grad_out);
  const int64_t taps = a.kernel_h * a.kernel_w;
  const int64_t oc = blockIdx.x / taps, tap = blockIdx.x % taps;
  const int64_t kh = tap / a.kernel_w, kw = tap % a.kernel_w;
  const int64_t ic = oc / (a.out_c / a.in_c);
  const int64_t pixels = a.batch * a.out_h * a.out_w;
  acc_t<T> s = 0;
  for (int64_t p = threadIdx.x; p < pixels; p += kThreads) {
    const int64_t ox = p % a.out_w, oy = (p / a.out_w) % a.out_h, n = p / (a.out_w * a.out_h);
    const int64_t iy = oy * a.stride_h - a.pad_h + kh * a.dil_h;
    const int64_t ix = ox * a.stride_w - a.pad_w + kw * a.dil_w;
    if (iy < 0 || iy >= a.in_h || ix < 0 || ix >= a.in_w) continue;
    s += to_acc(go[n * a.go_sn + oc * a.go_sc + oy * a.go_sh + ox * a.go_sw]) *
         to_acc(in[n * a.in_sn + ic * a.in_sc + iy * a.in_sh + ix * a.in_sw]);
  }
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) static_cast<T*>(a.out)[oc * taps + tap] = from_acc<T>(s);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bias_grad_kernel(const BiasGradArgs a) {
  const T* go = static_cast<const T*>(a.grad_out);
  const int64_t c = blockIdx.x;
  const int64_t pixels = a.batch * a.h * a.w;
  acc_t<T> s = 0;
  for (int64_t p = threadIdx.x; p < pixels; p += kThreads) {
    const int64_t x = p % a.w, y = (p / a.w) % a.h, n = p / (a.w * a.h);
    s += to_acc(go[n * a.go_sn + c * a.go_sc + y * a.go_sh + x * a.go_sw]);
  }
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) static_cast<T*>(a.grad_bias)[c] = from_acc<T>(s);
}

template <template <typename> class Launch, typename Args>
cudaError_t dispatch(const Args& a, DType dtype, cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf: Launch<__half>::run(a, stream); break;
    case DType::kBFloat16: Launch<__nv_bfloat16>::run(a, stream); break;
    case DType::kFloat: Launch<float>::run(a, stream); break;
    case DType::kDouble: Launch<double>::run(a, stream); break;
  }
  return cudaGetLastError();
}

template <typename T> struct Forward {
  static void run(const DepthwiseArgs& a, cudaStream_t s) {
    const int64_t n = a.batch * a.out_c * a.out_h * a.out_w;
    depthwise_forward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(a);
  }
};
template <typename T> struct Dgrad {
  static void run(const DepthwiseArgs& a, cudaStream_t s) {
    const int64_t n = a.batch * a.in_c * a.in_h * a.in_w;
    depthwise_dgrad_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(a);
  }
};
template <typename T> struct Wgrad {
  static void run(const DepthwiseArgs& a, cudaStream_t s) {
    depthwise_wgrad_kernel<T><<<unsigned(a.out_c * a.kernel_h * a.kernel_w), kThreads, 0, s>>>(a);
  }
};
template <typename T> struct BiasGrad {
  static void run(const BiasGradArgs& a, cudaStream_t s) {
    bias_grad_kernel<T><<<unsigned(a.channels), kThreads, 0, s>>>(a);
  }
};

}  // namespace

cudaError_t launch_depthwise_forward(const DepthwiseArgs& a, DType d, cudaStream_t s) {
  return dispatch<Forward>(a, d, s);
}
cudaError_t launch_depthwise_dgrad(const DepthwiseArgs& a, DType d, cudaStream_t s) {
  return dispatch<Dgrad>(a, d, s);
}
cudaError_t launch_depthwise_wgrad(const DepthwiseArgs& a, DType d, cudaStream_t s) {
  return dispatch<Wgrad>(a, d, s);
}
cudaError_t launch_bias_grad(const BiasGradArgs& a, DType d, cudaStream_t s) {
  return dispatch<BiasGrad>(a, d, s);
}

}  // namespace cnnext::cuda
