#include "implicit_conv2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "conv2d_workspace.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"

namespace cnnext::cpu {
namespace {

// The padded copy of one image: stride phase (py, px) of channel c is a plane of `rows` x
// `cols` whose element (r, q) is padded input row r * sh + py, column q * sw + px.
struct PhaseLayout {
  int64_t H, W, sh, sw, ph, pw;
  int64_t rows, cols;  // of one phase plane; cols is the wide output's row pitch QW
  int64_t plane;       // rows * cols
  int64_t channel;     // sh * sw * plane
};

PhaseLayout make_layout(const Conv2dGeometry& g, const Conv2dParams& p) {
  PhaseLayout L;
  L.H = g.in_h, L.W = g.in_w;
  L.sh = p.stride[0], L.sw = p.stride[1];
  L.ph = p.padding[0], L.pw = p.padding[1];
  // The padded rows and columns some window reads.
  const int64_t PH = (g.out_h - 1) * L.sh + (g.kernel_h - 1) * p.dilation[0] + 1;
  const int64_t PW = (g.out_w - 1) * L.sw + (g.kernel_w - 1) * p.dilation[1] + 1;
  L.rows = (PH + L.sh - 1) / L.sh;
  L.cols = (PW + L.sw - 1) / L.sw;
  L.plane = L.rows * L.cols;
  L.channel = L.sh * L.sw * L.plane;
  return L;
}

// offset[k] for k = (c, ky, kx) of one group, the weights' own order: where tap (ky, kx) of
// channel c of output pixel (0, 0) sits; pixel (oy, ox) adds oy * cols + ox.
std::vector<int64_t> tap_offsets(const Conv2dGeometry& g, const Conv2dParams& p,
                                 const PhaseLayout& L) {
  std::vector<int64_t> off;
  off.reserve(g.col_rows());
  for (int64_t c = 0; c < g.in_channels_per_group(); ++c)
    for (int64_t ky = 0; ky < g.kernel_h; ++ky)
      for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
        const int64_t y = ky * p.dilation[0], x = kx * p.dilation[1];
        off.push_back(c * L.channel + ((y % L.sh) * L.sw + x % L.sw) * L.plane +
                      (y / L.sh) * L.cols + x / L.sw);
      }
  return off;
}

// Phase planes of channels [c0, c1) of one image, zeros in the padding.
template <typename T>
void fill_phases(const T* image, const PhaseLayout& L, int64_t c0, int64_t c1, T* buf) {
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t py = 0; py < L.sh; ++py)
      for (int64_t px = 0; px < L.sw; ++px) {
        T* dst = buf + c * L.channel + (py * L.sw + px) * L.plane;
        // Columns q with input column x = q * sw + px - pw inside [0, W).
        const int64_t lead = L.pw - px;
        const int64_t q_lo = std::min(L.cols, lead > 0 ? (lead + L.sw - 1) / L.sw : int64_t(0));
        const int64_t q_hi =
            std::clamp<int64_t>((L.W + lead + L.sw - 1) / L.sw, q_lo, L.cols);
        for (int64_t r = 0; r < L.rows; ++r) {
          T* row = dst + r * L.cols;
          const int64_t y = r * L.sh + py - L.ph;
          if (y < 0 || y >= L.H) {
            std::fill(row, row + L.cols, T(0));
            continue;
          }
          const T* src = image + (c * L.H + y) * L.W;  // column q reads src[q * sw - lead]
          std::fill(row, row + q_lo, T(0));
          if (L.sw == 1) {
            std::copy(src + (q_lo - lead), src + (q_hi - lead), row + q_lo);
          } else {
            for (int64_t q = q_lo; q < q_hi; ++q) row[q] = src[q * L.sw - lead];
          }
          std::fill(row + q_hi, row + L.cols, T(0));
        }
      }
}

template <typename T>
struct Job {
  const Conv2dGeometry& g;
  PhaseLayout L;
  const gemm_detail::KernelSet<T>& ks;
  std::vector<int64_t> offsets;  // one group's, K of them
  const T* a_packed;             // the weights in micro-kernel slivers, group after group
  int64_t a_group_stride;        // whole slivers per group (a partial sliver strides mr per k)
  const T* bias;
  T* out;
  int64_t K, rows_per_chunk;
  int64_t buffer_elems;  // the image's phase planes plus zeros for the overhanging reads
  int64_t stage_elems;
};

// Output rows [oy0, oy1) of image n from its phase buffer: the wide GEMM into `stage`, then
// the valid columns (plus bias) into out.
template <typename T>
void rows_from_buffer(const Job<T>& J, const T* buf, int64_t n, int64_t oy0, int64_t oy1,
                      T* stage) {
  const Conv2dGeometry& g = J.g;
  const int64_t cols = J.L.cols, nq = (oy1 - oy0) * cols;
  const int64_t cout_g = g.out_channels_per_group(), cin_g = g.in_channels_per_group();
  const int mr = J.ks.mr, nr = J.ks.nr;
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const T* b = buf + gi * cin_g * J.L.channel + oy0 * cols;
    const T* a = J.a_packed + gi * J.a_group_stride;
    T* st = stage + gi * cout_g * nq;
    for (int64_t s = 0; s < cout_g; s += mr) {
      const auto kernel = J.ks.offset_rows[std::min<int64_t>(mr, cout_g - s)];
      // Depth blocks of the sliver (each stays in L1 while the tiles pass), accumulated.
      for (int64_t pc = 0; pc < J.K; pc += J.ks.kc) {
        const int64_t kc = std::min(J.ks.kc, J.K - pc);
        for (int64_t j = 0; j < nq; j += nr)
          kernel(kc, a + s * J.K + pc * mr, b + j, J.offsets.data() + pc, st + s * nq + j, nq,
                 T(1), pc == 0 ? T(0) : T(1), std::min<int64_t>(nr, nq - j));
      }
    }
  }
  const int64_t OW = g.out_w;
  for (int64_t o = 0; o < g.out_channels; ++o) {
    const T beta = J.bias != nullptr ? J.bias[o] : T(0);
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      const T* src = stage + o * nq + (oy - oy0) * cols;
      T* dst = J.out + ((n * g.out_channels + o) * g.out_h + oy) * OW;
      for (int64_t x = 0; x < OW; ++x) dst[x] = src[x] + beta;
    }
  }
}

template <typename T>
void image_forward(const Job<T>& J, const T* in, int64_t n) {
  const Conv2dGeometry& g = J.g;
  T* buf = thread_workspace_as<T>(WorkspaceSlot::Plane, J.buffer_elems);
  T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, J.stage_elems);
  const int64_t planes = g.in_channels * J.L.channel;
  fill_phases(in + n * g.in_channels * g.in_plane(), J.L, 0, g.in_channels, buf);
  std::fill(buf + planes, buf + J.buffer_elems, T(0));
  for (int64_t oy0 = 0; oy0 < g.out_h; oy0 += J.rows_per_chunk)
    rows_from_buffer(J, buf, n, oy0, std::min(g.out_h, oy0 + J.rows_per_chunk), stage);
}

}  // namespace

bool implicit_conv2d_applies(const Conv2dGeometry& g, const Conv2dParams& p) {
  const bool pointwise = g.kernel_h == 1 && g.kernel_w == 1 && p.stride[0] == 1 &&
                         p.stride[1] == 1 && p.padding[0] == 0 && p.padding[1] == 0;
  return !pointwise && g.col_rows() > 0 && g.batch > 0 &&
         g.out_h > 0 && g.out_w > 0 && g.out_channels > 0;
}

bool implicit_conv2d_preferred(const Conv2dGeometry& g, const Conv2dParams& p) {
  // Each weight sliver re-reads the scattered B rows, where im2col's packed, contiguous panel
  // is read once per block: with many output channels im2col wins (1x1 stride-2 ResNet
  // shortcuts 64..256 -> 128..512: 1.05-1.5x torch on im2col, 0.65-0.9x here). With a few
  // slivers the implicit GEMM wins on short reductions (LeNet C2: 0.26 vs 0.46 ms; the ResNet
  // stem: 7.9 vs 12.9 ms) and on any stride-1 layer (8x64x56x56 -> 64 5x5: 19.8 vs 27.3 ms), but
  // not on long strided ones (8x128x28x28 -> 64 3x3 s2: 1.58 vs 1.49 ms).
  constexpr int64_t kMaxOutChannels = 64, kMaxStridedReduction = 512;
  const bool unit_stride = p.stride[0] == 1 && p.stride[1] == 1;
  if (!implicit_conv2d_applies(g, p) || g.out_channels_per_group() > kMaxOutChannels ||
      (!unit_stride && g.col_rows() > kMaxStridedReduction))
    return false;
  // Wide rows waste (cols - OW) / cols of the work: keep that under about a third.
  const PhaseLayout L = make_layout(g, p);
  return 3 * L.cols <= 4 * g.out_w + 8;
}

bool implicit_conv2d_grad_weight_preferred(const Conv2dGeometry& g, const Conv2dParams& p) {
  // Each image's dot products run over its wide pixels and are then reduced across lanes: with
  // a few hundred pixels the reductions cost more than im2col (LeNet C2, 140 wide pixels:
  // 1.58 vs 1.52 ms forward+backward), with more they win (LeNet C1, 896: 1.07 vs 1.14 ms;
  // the ResNet stem: 39 vs 42 ms).
  constexpr int64_t kMinWidePixels = 512;
  return implicit_conv2d_preferred(g, p) && g.out_h * make_layout(g, p).cols >= kMinWidePixels;
}

template <typename T>
Job<T> make_job(const Conv2dGeometry& g, const Conv2dParams& p, const T* bias, T* out) {
  const gemm_detail::KernelSet<T>& ks = gemm_kernels<T>(active_isa());
  Job<T> J{g, make_layout(g, p), ks, {}, nullptr, 0, bias, out, g.col_rows(), 1, 0, 0};
  J.offsets = tap_offsets(g, p, J.L);
  // Reads reach at most the last channel's planes plus a wide chunk and a sliver past them.
  J.buffer_elems = g.in_channels * J.L.channel + g.out_h * J.L.cols + ks.nr;
  // Output rows per chunk: the staged wide rows of every output channel stay in L2.
  constexpr int64_t kStageElems = int64_t(64) << 10;
  J.rows_per_chunk =
      std::clamp<int64_t>(kStageElems / (g.out_channels * J.L.cols), 1, g.out_h);
  J.stage_elems = g.out_channels * J.rows_per_chunk * J.L.cols;
  return J;
}

// c[i][j] += dot(a_rows[i], b_rows[j]) over K for i < m, j < n (at most kDotTile each).
template <typename T>
void dot_tile(const gemm_detail::KernelSet<T>& ks, int64_t K, const T* const* a_rows,
              const T* const* b_rows, T* c, int64_t ldc, int64_t m, int64_t n) {
  if (ks.dot_rows != nullptr) {
    ks.dot_rows(K, a_rows, b_rows, c, ldc, T(1), T(1), m, n);
    return;
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += a_rows[i][k] * b_rows[j][k];
      c[i * ldc + j] += sum;
    }
}

template <typename T>
void implicit_conv2d_forward(const T* in, const T* w, const T* bias, T* out,
                             const Conv2dGeometry& g, const Conv2dParams& p) {
  Job<T> J = make_job(g, p, bias, out);
  const gemm_detail::KernelSet<T>& ks = J.ks;
  const int64_t cout_g = g.out_channels_per_group();
  J.a_group_stride = (cout_g + ks.mr - 1) / ks.mr * ks.mr * J.K;
  T* a_packed = thread_workspace_as<T>(WorkspaceSlot::PackedWeights, g.groups * J.a_group_stride);
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm_detail::pack_a_with(ks, false, w + gi * cout_g * J.K, J.K, 0, 0, cout_g, J.K,
                             a_packed + gi * J.a_group_stride);
  J.a_packed = a_packed;

  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads == 1 || g.batch >= threads) {
    at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) image_forward(J, in, n);
    });
    return;
  }
  // Fewer images than threads: share each image's buffer and split its row chunks.
  T* buf = thread_workspace_as<T>(WorkspaceSlot::Plane, J.buffer_elems);
  const int64_t planes = g.in_channels * J.L.channel;
  const int64_t chunks = (g.out_h + J.rows_per_chunk - 1) / J.rows_per_chunk;
  for (int64_t n = 0; n < g.batch; ++n) {
    const T* image = in + n * g.in_channels * g.in_plane();
    at::parallel_for(0, g.in_channels, 1, [&](int64_t c0, int64_t c1) {
      fill_phases(image, J.L, c0, c1, buf);
    });
    std::fill(buf + planes, buf + J.buffer_elems, T(0));
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, J.stage_elems);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t oy0 = i * J.rows_per_chunk;
        rows_from_buffer(J, buf, n, oy0, std::min(g.out_h, oy0 + J.rows_per_chunk), stage);
      }
    });
  }
}

template <typename T>
void implicit_conv2d_grad_weight(const T* grad_output, const T* in, int64_t n_begin,
                                 int64_t n_end, T* acc, const Conv2dGeometry& g,
                                 const Conv2dParams& p) {
  const Job<T> J = make_job<T>(g, p, nullptr, nullptr);
  constexpr int64_t D = gemm_detail::kDotTile;
  const int64_t cols = J.L.cols, nq = g.out_h * cols, OW = g.out_w;
  const int64_t cout_g = g.out_channels_per_group(), cin_g = g.in_channels_per_group();
  T* buf = thread_workspace_as<T>(WorkspaceSlot::Plane, J.buffer_elems);
  T* wide = thread_workspace_as<T>(WorkspaceSlot::Staging, g.out_channels * nq);
  const int64_t planes = g.in_channels * J.L.channel;
  for (int64_t n = n_begin; n < n_end; ++n) {
    fill_phases(in + n * g.in_channels * g.in_plane(), J.L, 0, g.in_channels, buf);
    std::fill(buf + planes, buf + J.buffer_elems, T(0));
    // grad_output in the wide layout, zero in the columns past the output's width.
    for (int64_t o = 0; o < g.out_channels; ++o)
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        const T* src = grad_output + ((n * g.out_channels + o) * g.out_h + oy) * OW;
        T* dst = wide + o * nq + oy * cols;
        std::copy(src, src + OW, dst);
        std::fill(dst + OW, dst + cols, T(0));
      }
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const T* b = buf + gi * cin_g * J.L.channel;
      for (int64_t o0 = 0; o0 < cout_g; o0 += D) {
        const T* a_rows[D];
        for (int64_t i = 0; i < D; ++i)
          a_rows[i] = wide + (gi * cout_g + std::min(o0 + i, cout_g - 1)) * nq;
        for (int64_t k0 = 0; k0 < J.K; k0 += D) {
          const T* b_rows[D];
          for (int64_t j = 0; j < D; ++j) b_rows[j] = b + J.offsets[std::min(k0 + j, J.K - 1)];
          dot_tile(J.ks, nq, a_rows, b_rows, acc + (gi * cout_g + o0) * J.K + k0, J.K,
                   std::min(D, cout_g - o0), std::min(D, J.K - k0));
        }
      }
    }
  }
}

template void implicit_conv2d_forward<float>(const float*, const float*, const float*, float*,
                                             const Conv2dGeometry&, const Conv2dParams&);
template void implicit_conv2d_forward<double>(const double*, const double*, const double*,
                                              double*, const Conv2dGeometry&,
                                              const Conv2dParams&);
template void implicit_conv2d_grad_weight<float>(const float*, const float*, int64_t, int64_t,
                                                 float*, const Conv2dGeometry&,
                                                 const Conv2dParams&);
template void implicit_conv2d_grad_weight<double>(const double*, const double*, int64_t,
                                                  int64_t, double*, const Conv2dGeometry&,
                                                  const Conv2dParams&);

}  // namespace cnnext::cpu
