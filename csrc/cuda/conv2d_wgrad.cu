// conv2d grad_weight: split-K GEMM  dW[co][(kh, kw, c)] = sum over pixels of
// grad_output[pixel][co] * input[source pixel][c], each split writing its own partial tile
// to a workspace, then one pass adding the splits in order (bit-identical run to run).
#include "conv2d_launch.h"
#include "simt_gemm.cuh"

namespace cnnext::cuda {
namespace {

template <typename TT>
struct WgradProblem {
  using T = TT;
  static constexpr bool kAKFast = false;  // consecutive co are contiguous in NHWC grad_output
  static constexpr bool kBJFast = true;   // consecutive (.., c) are contiguous in NHWC input
  WgradArgs args;
  int64_t cout_g, cin_g, J, K, chunk;
  __device__ int64_t m_size() const { return cout_g; }
  __device__ int64_t j_size() const { return J; }
  __device__ void k_range(int64_t z, int64_t* g, int64_t* kb, int64_t* ke) const {
    const int64_t split = z / args.groups;
    *g = z - split * args.groups;
    *kb = split * chunk;
    *ke = (split + 1) * chunk < K ? (split + 1) * chunk : K;
  }
  __device__ acc_t<T> a(int64_t g, int64_t m, int64_t k) const {
    return to_acc(static_cast<const T*>(args.grad_out)[k * args.out_c + g * cout_g + m]);
  }
  __device__ acc_t<T> b(int64_t g, int64_t k, int64_t j) const {
    const WgradArgs& w = args;
    const int64_t plane = w.out_h * w.out_w;
    const int64_t n = k / plane, rem = k - n * plane;
    const int64_t oy = rem / w.out_w, ox = rem - oy * w.out_w;
    const int64_t tap = j / cin_g, c = j - tap * cin_g;
    const int64_t kh = tap / w.kernel_w, kw = tap - kh * w.kernel_w;
    const int64_t iy = oy * w.stride_h - w.pad_h + kh * w.dil_h;
    const int64_t ix = ox * w.stride_w - w.pad_w + kw * w.dil_w;
    if (iy < 0 || iy >= w.in_h || ix < 0 || ix >= w.in_w) return acc_t<T>(0);
    return to_acc(static_cast<const T*>(w.input)[((n * w.in_h + iy) * w.in_w + ix) * w.in_c +
                                                 g * cin_g + c]);
  }
  __device__ void store(int64_t z, int64_t, int64_t m, int64_t j, acc_t<T> v) const {
    // z = split * groups + g: the workspace is [split][g][m][j].
    static_cast<acc_t<T>*>(args.workspace)[(z * cout_g + m) * J + j] = v;
  }
};

template <typename T>
__global__ void sum_splits_kernel(const acc_t<T>* workspace, T* grad_weight, int64_t per_split,
                                  int64_t splits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < per_split;
       i += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> s = 0;
    for (int64_t k = 0; k < splits; ++k) s += workspace[k * per_split + i];
    grad_weight[i] = from_acc<T>(s);
  }
}

template <typename T>
void launch(const WgradArgs& a, cudaStream_t stream) {
  WgradProblem<T> p;
  p.args = a;
  p.cout_g = a.out_c / a.groups;
  p.cin_g = a.in_c / a.groups;
  p.J = a.kernel_h * a.kernel_w * p.cin_g;
  p.K = a.batch * a.out_h * a.out_w;
  p.chunk = ceil_div(ceil_div(p.K, a.splits), kSimtBK) * kSimtBK;
  const dim3 grid(unsigned(ceil_div(p.cout_g, kSimtBM)), unsigned(ceil_div(p.J, kSimtBN)),
                  unsigned(a.splits * a.groups));
  simt_gemm_kernel<WgradProblem<T>><<<grid, kSimtThreads, 0, stream>>>(p);
  const int64_t per_split = a.groups * p.cout_g * p.J;
  sum_splits_kernel<T><<<grid_for(per_split, 256), 256, 0, stream>>>(
      static_cast<const acc_t<T>*>(a.workspace), static_cast<T*>(a.grad_weight), per_split,
      a.splits);
}

}  // namespace

int64_t wgrad_workspace_bytes(const WgradArgs& a, DType dtype) {
  const int64_t elems = a.splits * a.out_c * a.kernel_h * a.kernel_w * (a.in_c / a.groups);
  return elems * (dtype == DType::kDouble ? 8 : 4);
}

cudaError_t launch_conv_wgrad(const WgradArgs& a, DType dtype, cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf: launch<__half>(a, stream); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(a, stream); break;
    case DType::kFloat: launch<float>(a, stream); break;
    case DType::kDouble: launch<double>(a, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace cnnext::cuda
