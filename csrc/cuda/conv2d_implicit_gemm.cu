// conv2d forward and grad_input as implicit GEMMs (no im2col buffer): rows are result pixels,
// columns result channels, K the (kh, kw, c) taps of an NHWC source gathered on the fly.
//  - float16 / bfloat16, and float32 with TF32 allowed: tensor cores through WMMA, float32
//    accumulation; tiles of 128 pixels x 64 channels x one K chunk of 64 bytes per row, loaded
//    into shared memory with 16-byte cp.async (zero-filled outside the image) and double-buffered.
//  - float32 with TF32 off, and float64: the CUDA-core GEMM of simt_gemm.cuh.
#include <mma.h>

#include "conv2d_launch.h"
#include "simt_gemm.cuh"

namespace cnnext::cuda {
namespace {

namespace wmma = nvcuda::wmma;

// ---- the tap gather shared by both paths ------------------------------------------------
// Source pixel (sy, sx) read by result pixel (y, x) through tap (kh, kw); false if none.
__device__ __forceinline__ bool source_pixel(const ImplicitGemmArgs& a, int64_t y, int64_t x,
                                             int64_t kh, int64_t kw, int64_t* sy, int64_t* sx) {
  if (!a.dgrad) {
    *sy = y * a.stride_h - a.pad_h + kh * a.dil_h;
    *sx = x * a.stride_w - a.pad_w + kw * a.dil_w;
  } else {  // grad_input(y, x) gathers grad_output(oy, ox) with oy * stride = y + pad - kh * dil
    const int64_t ny = y + a.pad_h - kh * a.dil_h;
    const int64_t nx = x + a.pad_w - kw * a.dil_w;
    if (ny < 0 || nx < 0 || ny % a.stride_h != 0 || nx % a.stride_w != 0) return false;
    *sy = ny / a.stride_h;
    *sx = nx / a.stride_w;
  }
  return *sy >= 0 && *sy < a.src_h && *sx >= 0 && *sx < a.src_w;
}

struct RowPixel {
  int64_t n, y, x;
};

__device__ __forceinline__ RowPixel decode_row(const ImplicitGemmArgs& a, int64_t m) {
  const int64_t plane = a.rows_h * a.rows_w;
  RowPixel r;
  r.n = m / plane;
  const int64_t rem = m - r.n * plane;
  r.y = rem / a.rows_w;
  r.x = rem - r.y * a.rows_w;
  return r;
}

// Offset of source element (row pixel, k) or -1 when it is padding.
__device__ __forceinline__ int64_t source_offset(const ImplicitGemmArgs& a, const RowPixel& r,
                                                 int64_t g, int64_t k) {
  const int64_t tap = k / a.k_c;
  const int64_t c = k - tap * a.k_c;
  const int64_t kh = tap / a.kernel_w;
  const int64_t kw = tap - kh * a.kernel_w;
  int64_t sy, sx;
  if (!source_pixel(a, r.y, r.x, kh, kw, &sy, &sx)) return -1;
  return ((r.n * a.src_h + sy) * a.src_w + sx) * a.src_c + g * a.k_c + c;
}

// ---- tensor-core path ---------------------------------------------------------------------
template <typename T> struct Wmma;
template <> struct Wmma<__half> {
  using frag_t = __half;
  static constexpr int kK = 16;
};
template <> struct Wmma<__nv_bfloat16> {
  using frag_t = __nv_bfloat16;
  static constexpr int kK = 16;
};
template <> struct Wmma<float> {
  using frag_t = wmma::precision::tf32;
  static constexpr int kK = 8;
};

constexpr int kBM = 128, kBN = 64, kThreads = 256;  // 8 warps: 4 along M x 2 along N, 32x32 each

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// kVec: every 16-byte vector of a K chunk lies inside one tap and is 16-byte aligned
// (k_c and src_c multiples of the vector width, aligned pointers); else element loads.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) conv_wmma_kernel(const ImplicitGemmArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using F = typename Wmma<T>::frag_t;
  constexpr int kVecElems = 16 / sizeof(T);
  constexpr int kBK = 4 * kVecElems;      // 64 bytes of K per row per stage
  constexpr int kLd = kBK + kVecElems;    // +16 bytes per row against bank conflicts
  constexpr int kCLd = kBM + 4;           // epilogue tile, column-major
  constexpr int kStageA = kBM * kLd, kStageB = kBN * kLd;
  constexpr int kMainBytes = 2 * (kStageA + kStageB) * int(sizeof(T));
  constexpr int kEpiBytes = kBN * kCLd * int(sizeof(float));
  __shared__ __align__(128) unsigned char smem[kMainBytes > kEpiBytes ? kMainBytes : kEpiBytes];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + 2 * kStageA;
  float* Cs = reinterpret_cast<float*>(smem);

  const T* src = static_cast<const T*>(a.src);
  const T* filter = static_cast<const T*>(a.filter);
  const int tid = threadIdx.x, warp = tid / 32;
  const int warp_m = warp % 4, warp_n = warp / 4;
  const int64_t M = a.batch * a.rows_h * a.rows_w;
  const int64_t K = a.kernel_h * a.kernel_w * a.k_c;
  const int64_t m0 = int64_t(blockIdx.x) * kBM;
  const int64_t j0 = int64_t(blockIdx.y) * kBN;
  const int64_t num_k = (K + kBK - 1) / kBK;

  // Vector loads: thread owns vector column vc of A rows r0, r0 + 64 and of B row r0.
  const int vc = tid % 4, r0 = tid / 4;
  RowPixel rows[2];
  bool row_ok[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t m = m0 + r0 + 64 * i;
    row_ok[i] = m < M;
    rows[i] = decode_row(a, row_ok[i] ? m : 0);
  }

  for (int64_t g = blockIdx.z; g < a.groups; g += gridDim.z) {
    const T* filter_g = filter + g * a.gemm_n * K;

    auto load_stage = [&](int stage, int64_t k0) {
      T* as = As + stage * kStageA;
      T* bs = Bs + stage * kStageB;
      if (kVec) {
        const int64_t k = k0 + vc * kVecElems;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int64_t off = (row_ok[i] && k < K) ? source_offset(a, rows[i], g, k) : -1;
          cp_async_16(as + (r0 + 64 * i) * kLd + vc * kVecElems, off >= 0 ? src + off : src, off >= 0);
        }
        const bool b_ok = j0 + r0 < a.gemm_n && k < K;
        cp_async_16(bs + r0 * kLd + vc * kVecElems,
                    b_ok ? filter_g + (j0 + r0) * K + k : filter, b_ok);
      } else {
        for (int e = tid; e < kBM * kBK; e += kThreads) {
          const int r = e / kBK, kk = e % kBK;
          const int64_t m = m0 + r, k = k0 + kk;
          int64_t off = -1;
          if (m < M && k < K) off = source_offset(a, decode_row(a, m), g, k);
          as[r * kLd + kk] = off >= 0 ? src[off] : zero_value<T>();
        }
        for (int e = tid; e < kBN * kBK; e += kThreads) {
          const int r = e / kBK, kk = e % kBK;
          const int64_t j = j0 + r, k = k0 + kk;
          bs[r * kLd + kk] = (j < a.gemm_n && k < K) ? filter_g[j * K + k] : zero_value<T>();
        }
      }
    };

    wmma::fragment<wmma::accumulator, 16, 16, Wmma<T>::kK, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    load_stage(0, 0);
    cp_async_commit();
    for (int64_t kt = 0; kt < num_k; ++kt) {
      if (kt + 1 < num_k) {
        load_stage(int((kt + 1) & 1), (kt + 1) * kBK);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const T* as = As + int(kt & 1) * kStageA;
      const T* bs = Bs + int(kt & 1) * kStageB;
#pragma unroll
      for (int kk = 0; kk < kBK; kk += Wmma<T>::kK) {
        wmma::fragment<wmma::matrix_a, 16, 16, Wmma<T>::kK, F, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, Wmma<T>::kK, F, wmma::col_major> fb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          wmma::load_matrix_sync(fa[i], as + (warp_m * 32 + i * 16) * kLd + kk, kLd);
          wmma::load_matrix_sync(fb[i], bs + (warp_n * 32 + i * 16) * kLd + kk, kLd);
          if constexpr (sizeof(T) == 4) {  // TF32: round the float32 operands
#pragma unroll
            for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
#pragma unroll
            for (int t = 0; t < fb[i].num_elements; ++t) fb[i].x[t] = wmma::__float_to_tf32(fb[i].x[t]);
          }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
      __syncthreads();
    }

    // Epilogue: accumulators through shared memory (column-major, so consecutive threads
    // take consecutive pixels of one channel: coalesced NCHW stores), + bias, converted.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(Cs + (warp_n * 32 + j * 16) * kCLd + warp_m * 32 + i * 16,
                                acc[i][j], kCLd, wmma::mem_col_major);
    __syncthreads();
    const T* bias = static_cast<const T*>(a.bias);
    T* out = static_cast<T*>(a.out);
    for (int e = tid; e < kBM * kBN; e += kThreads) {
      const int r = e % kBM, c = e / kBM;
      const int64_t m = m0 + r, j = j0 + c;
      if (m >= M || j >= a.gemm_n) continue;
      const int64_t ch = g * a.gemm_n + j;
      float v = Cs[c * kCLd + r];
      if (bias != nullptr) v += to_acc(bias[ch]);
      const RowPixel px = decode_row(a, m);
      out[px.n * a.out_sn + ch * a.out_sc + px.y * a.out_sh + px.x * a.out_sw] = from_acc<T>(v);
    }
    __syncthreads();  // Cs aliases the load stages of the next group
  }
#endif
}

// ---- CUDA-core path -------------------------------------------------------------------------
template <typename TT>
struct ImplicitGemmSimt {
  using T = TT;
  static constexpr bool kAKFast = true;  // NHWC: consecutive k are consecutive channels
  static constexpr bool kBJFast = false; // filter rows are contiguous in k
  ImplicitGemmArgs args;
  int64_t K;
  __device__ int64_t m_size() const { return args.batch * args.rows_h * args.rows_w; }
  __device__ int64_t j_size() const { return args.gemm_n; }
  __device__ void k_range(int64_t z, int64_t* g, int64_t* kb, int64_t* ke) const {
    *g = z;
    *kb = 0;
    *ke = K;
  }
  __device__ acc_t<T> a(int64_t g, int64_t m, int64_t k) const {
    const int64_t off = source_offset(args, decode_row(args, m), g, k);
    return off >= 0 ? to_acc(static_cast<const T*>(args.src)[off]) : acc_t<T>(0);
  }
  __device__ acc_t<T> b(int64_t g, int64_t k, int64_t j) const {
    return to_acc(static_cast<const T*>(args.filter)[(g * args.gemm_n + j) * K + k]);
  }
  __device__ void store(int64_t, int64_t g, int64_t m, int64_t j, acc_t<T> v) const {
    const ImplicitGemmArgs& a = args;
    const int64_t ch = g * a.gemm_n + j;
    if (a.bias != nullptr) v += to_acc(static_cast<const T*>(a.bias)[ch]);
    const RowPixel px = decode_row(a, m);
    static_cast<T*>(a.out)[px.n * a.out_sn + ch * a.out_sc + px.y * a.out_sh + px.x * a.out_sw] =
        from_acc<T>(v);
  }
};

template <typename T>
bool vectorizable(const ImplicitGemmArgs& a) {
  constexpr int v = 16 / sizeof(T);
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.k_c % v == 0 && a.src_c % v == 0 && aligned(a.src) && aligned(a.filter);
}

template <typename T>
void launch_wmma(const ImplicitGemmArgs& a, cudaStream_t stream) {
  const int64_t M = a.batch * a.rows_h * a.rows_w;
  const dim3 grid(unsigned(ceil_div(M, kBM)), unsigned(ceil_div(a.gemm_n, kBN)),
                  unsigned(a.groups < 65535 ? a.groups : 65535));
  if (vectorizable<T>(a))
    conv_wmma_kernel<T, true><<<grid, kThreads, 0, stream>>>(a);
  else
    conv_wmma_kernel<T, false><<<grid, kThreads, 0, stream>>>(a);
}

template <typename T>
void launch_simt(const ImplicitGemmArgs& a, cudaStream_t stream) {
  ImplicitGemmSimt<T> p{a, a.kernel_h * a.kernel_w * a.k_c};
  const int64_t M = a.batch * a.rows_h * a.rows_w;
  const dim3 grid(unsigned(ceil_div(M, kSimtBM)), unsigned(ceil_div(a.gemm_n, kSimtBN)),
                  unsigned(a.groups));
  simt_gemm_kernel<ImplicitGemmSimt<T>><<<grid, kSimtThreads, 0, stream>>>(p);
}

}  // namespace

cudaError_t launch_conv_implicit_gemm(const ImplicitGemmArgs& a, DType dtype, bool allow_tf32,
                                      cudaStream_t stream) {
  switch (dtype) {
    case DType::kHalf: launch_wmma<__half>(a, stream); break;
    case DType::kBFloat16: launch_wmma<__nv_bfloat16>(a, stream); break;
    case DType::kFloat:
      if (allow_tf32) launch_wmma<float>(a, stream);
      else launch_simt<float>(a, stream);
      break;
    case DType::kDouble: launch_simt<double>(a, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace cnnext::cuda
