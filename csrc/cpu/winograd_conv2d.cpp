// Winograd F(4x4, 3x3) driver. Two schedules, both running the 36 products on our GEMM
// micro-kernels (output-channel slivers of U against tile slivers of V):
// - tile blocks (many tiles: large images or batches): U is transformed once and shared;
//   blocks of tile rows go to the threads, each running input transform -> 36 products ->
//   output transform on cache-sized buffers of its own.
// - channel slivers (few tiles, many channels: late ResNet stages, where U would be 4x the
//   weights and far beyond the caches): V of all tiles is transformed once; each thread then
//   takes output-channel slivers, transforming only that sliver's U (it stays in L2) and
//   finishing its outputs.
// Every output element gets the same arithmetic whichever thread or schedule computes it.
#include "winograd_conv2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "conv2d_workspace.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "weight_cache.h"

namespace cnnext::cpu {
namespace {

using gemm_detail::KernelSet;

constexpr int kLanes = 16;

struct WinogradPlan {
  int64_t batch, in_channels, in_h, in_w, out_channels, out_h, out_w, pad_h, pad_w;
  int64_t dil_h, dil_w;  // a tile's pixels are this far apart, in the input and the output
  bool flipped;
  // Tiles per image column / row, over all dil_h x dil_w phases (see TileTable).
  int64_t tiles_h, tiles_w;
  int64_t mr, nr, slivers;   // micro-kernel shape; output-channel slivers
  int64_t taps_stride;       // row length of the transposed taps (C_out + a vector of zeros)
};

// Where each tile's patch starts (may be in the padding) and where its outputs go, for the
// tiles flattened as (image, tile row, tile column), padded to whole lanes with tiles that
// read nothing and write nothing.
struct TileOrigins {
  const int64_t *in_offset, *y0, *x0;     // input: n * C_in * H * W + y0 * W + x0, and y0, x0
  const int64_t *out_offset, *oy0, *ox0;  // output: n * C_out * OH * OW + oy0 * OW + ox0
};

}  // namespace

// The transforms copy short runs; calls to memcpy/memset for each would cost more than the copies.
#pragma GCC push_options
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
namespace winograd_avx512 {
namespace {
#include "winograd_conv2d_kernels.inc"
}
}  // namespace winograd_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#pragma GCC target("avx2,fma")
namespace winograd_avx2 {
namespace {
#include "winograd_conv2d_kernels.inc"
}
}  // namespace winograd_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC optimize("no-tree-loop-distribute-patterns")
namespace winograd_portable {
namespace {
#include "winograd_conv2d_kernels.inc"
}
}  // namespace winograd_portable
#pragma GCC pop_options

namespace {

struct Transforms {
  void (*transpose)(const WinogradPlan&, const float*, int64_t, int64_t, float*);
  void (*weights)(const WinogradPlan&, const float*, int64_t, float*, int64_t);
  void (*input)(const WinogradPlan&, const TileOrigins&, int64_t, int64_t, const float*, int64_t,
                int64_t, float*, int64_t);
  void (*output)(const WinogradPlan&, const TileOrigins&, int64_t, int64_t, const float*, int64_t,
                 int64_t, int64_t, const float*, int64_t, int64_t, float*);
};

Transforms transforms_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return {&winograd_avx512::transpose_weights, &winograd_avx512::transform_weights, &winograd_avx512::transform_input,
              &winograd_avx512::transform_output};
    case Isa::Avx2:
      return {&winograd_avx2::transpose_weights, &winograd_avx2::transform_weights, &winograd_avx2::transform_input,
              &winograd_avx2::transform_output};
    default:
      return {&winograd_portable::transpose_weights, &winograd_portable::transform_weights, &winograd_portable::transform_input,
              &winograd_portable::transform_output};
  }
}

// First output row (column) of tile row (column) r. With dilation d the outputs fall into d
// phases (rows oy = phase mod d), each an undilated convolution of the input's same phase;
// tile row r is tile r / d of phase r % d, so neighbouring tile rows read neighbouring input.
int64_t tile_start(int64_t r, int64_t d) { return r % d + 4 * d * (r / d); }

// Tile rows (columns) per image for `out` output rows (columns) at dilation d.
int64_t tiles_along(int64_t out, int64_t d) { return d * (((out + d - 1) / d + 3) / 4); }

// Owns the arrays behind a TileOrigins for the tiles [t_begin, t_end), indexed from t_begin
// (a block's own table: the tables never grow with the batch).
class TileTable {
 public:
  TileTable(const WinogradPlan& P, int64_t t_begin, int64_t t_end) {
    const int64_t tiles = t_end - t_begin;
    const int64_t padded = (tiles + kLanes - 1) / kLanes * kLanes;
    // Far outside any image, without overflow when a patch offset is added.
    constexpr int64_t kNowhere = int64_t(1) << 40;
    data_.assign(6 * padded, kNowhere);
    int64_t* a = data_.data();
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t t = t_begin + i, per_image = P.tiles_h * P.tiles_w;
      const int64_t n = t / per_image, rem = t % per_image;
      const int64_t oy = tile_start(rem / P.tiles_w, P.dil_h), ox = tile_start(rem % P.tiles_w, P.dil_w);
      const int64_t y = oy - P.pad_h, x = ox - P.pad_w;
      a[i] = n * P.in_channels * P.in_h * P.in_w + y * P.in_w + x;
      a[padded + i] = y;
      a[2 * padded + i] = x;
      a[3 * padded + i] = n * P.out_channels * P.out_h * P.out_w + oy * P.out_w + ox;
      a[4 * padded + i] = oy;
      a[5 * padded + i] = ox;
    }
    origins_ = {a, a + padded, a + 2 * padded, a + 3 * padded, a + 4 * padded, a + 5 * padded};
  }
  const TileOrigins& origins() const { return origins_; }

 private:
  std::vector<int64_t> data_;
  TileOrigins origins_;
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// M[e][o][col] = sum_c U[e][o][c] V[e][c][col] for e in [e_begin, e_end) and the output
// slivers [s_begin, s_end), whose U and M rows are indexed from s_begin (U of product e,
// sliver s at U + e * u_e_stride + (s - s_begin) * u_s_stride). Each U sliver stays in L1
// while the tile slivers stream past.
void multiply(const KernelSet<float>& ks, const WinogradPlan& P, const float* U,
              int64_t u_e_stride, int64_t u_s_stride, int64_t s_begin, int64_t s_end,
              const float* V, int64_t ldv, int64_t ncols, float* M, int64_t m_e_stride,
              int64_t e_begin, int64_t e_end) {
  const int64_t Ci = P.in_channels, Co = P.out_channels, mr = P.mr, nr = P.nr;
  for (int64_t e = e_begin; e < e_end; ++e) {
    const float* v = V + e * Ci * ldv;
    for (int64_t s = s_begin; s < s_end; ++s) {
      const auto kernel = ks.rows[std::min(mr, Co - s * mr)];
      const float* a = U + e * u_e_stride + (s - s_begin) * u_s_stride;
      float* m = M + e * m_e_stride + (s - s_begin) * mr * ldv;
      for (int64_t j = 0; j < ncols; j += nr)
        kernel(Ci, a, v + j, ldv, m + j, ldv, 1.f, 0.f, std::min(nr, ncols - j));
    }
  }
}

// Columns of V and M for `tiles` tiles: whole micro-kernel slivers and whole lanes.
int64_t columns_for(const WinogradPlan& P, int64_t tiles) {
  return round_up(round_up(tiles, kLanes), P.nr);
}

// Tiles per block: enough for wide products, few enough that the block's V and M stay near
// L2; then rounded so that every thread gets the same number of blocks.
int64_t tiles_per_block(const WinogradPlan& P, int64_t tiles, int64_t threads) {
  constexpr int64_t kBlockBytes = int64_t(3) << 19;  // 1.5 MiB for V + M together
  const int64_t per_tile = 36 * (P.in_channels + P.out_channels) * int64_t(sizeof(float));
  const int64_t target = std::clamp<int64_t>(kBlockBytes / per_tile, 2 * P.nr, 4 * P.nr);
  int64_t blocks = (tiles + target - 1) / target;
  if (blocks >= threads) blocks = round_up(blocks, threads);
  return round_up((tiles + blocks - 1) / blocks, kLanes);
}

// The weights with output channels contiguous (see transpose_weights), in a buffer of the
// calling thread.
const float* transposed_weights(const WinogradPlan& P, const Transforms& tf, const float* w) {
  float* wt = thread_workspace_as<float>(WorkspaceSlot::Partials, 9 * P.in_channels * P.taps_stride);
  at::parallel_for(0, P.in_channels, 1, [&](int64_t begin, int64_t end) {
    tf.transpose(P, w, begin, end, wt);
  });
  return wt;
}

void run_tile_blocks(const WinogradPlan& P, const KernelSet<float>& ks, const Transforms& tf,
                     int64_t threads, const float* in, const float* w, const float* bias,
                     float* out) {
  const int64_t Ci = P.in_channels, Co = P.out_channels, mr = P.mr;
  // Slivers of U padded by the weight transform's store slack.
  const int64_t u_s_stride = Ci * mr + kLanes, u_e_stride = P.slivers * u_s_stride;
  const auto transform = [&](void* dst) {
    float* u = static_cast<float*>(dst);
    const float* wt = transposed_weights(P, tf, w);
    at::parallel_for(0, P.slivers, 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) tf.weights(P, wt, s, u + s * u_s_stride, u_e_stride);
    });
  };
  // Inference reuses the transformed taps of an unchanged weight (weight_cache.h).
  const at::Tensor cached = cached_packed_weight(
      weight_pack_kind({kWinogradTaps, static_cast<int64_t>(active_isa()), Ci, Co, mr,
                        int64_t(P.flipped), P.taps_stride, kLanes}),
      size_t(36 * u_e_stride) * sizeof(float), transform);
  float* U = cached.defined()
                 ? static_cast<float*>(cached.data_ptr())
                 : thread_workspace_as<float>(WorkspaceSlot::WinogradWeights, 36 * u_e_stride);
  if (!cached.defined()) transform(U);

  const int64_t tiles = P.batch * P.tiles_h * P.tiles_w;
  const int64_t tpb = tiles_per_block(P, tiles, threads);
  const int64_t blocks = (tiles + tpb - 1) / tpb;
  const int64_t ldv = columns_for(P, tpb);
  const int64_t v_size = 36 * Ci * ldv, m_size = 36 * Co * ldv;

  if (threads > 1 && blocks >= threads) {
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      float* V = thread_workspace_as<float>(WorkspaceSlot::Columns, v_size);
      float* M = thread_workspace_as<float>(WorkspaceSlot::Staging, m_size);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t0 = i * tpb, t1 = std::min(tiles, t0 + tpb);
        const TileTable table(P, t0, t1);
        const TileOrigins& T = table.origins();
        tf.input(P, T, 0, t1 - t0, in, 0, Ci, V, ldv);
        multiply(ks, P, U, u_e_stride, u_s_stride, 0, P.slivers, V, ldv, t1 - t0, M, Co * ldv, 0,
                 36);
        tf.output(P, T, 0, t1 - t0, M, Co * ldv, ldv, 0, bias, 0, Co, out);
      }
    });
    return;
  }
  // Fewer blocks than threads: split each phase of a block across the threads instead.
  float* V = thread_workspace_as<float>(WorkspaceSlot::Columns, v_size);
  float* M = thread_workspace_as<float>(WorkspaceSlot::Staging, m_size);
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t t0 = i * tpb, t1 = std::min(tiles, t0 + tpb);
    const TileTable table(P, t0, t1);
    const TileOrigins& T = table.origins();
    at::parallel_for(0, Ci, 1, [&](int64_t begin, int64_t end) {
      tf.input(P, T, 0, t1 - t0, in, begin, end, V, ldv);
    });
    at::parallel_for(0, 36, 1, [&](int64_t begin, int64_t end) {
      multiply(ks, P, U, u_e_stride, u_s_stride, 0, P.slivers, V, ldv, t1 - t0, M, Co * ldv, begin,
               end);
    });
    at::parallel_for(0, Co, 1, [&](int64_t begin, int64_t end) {
      tf.output(P, T, 0, t1 - t0, M, Co * ldv, ldv, 0, bias, begin, end, out);
    });
  }
}

void run_channel_slivers(const WinogradPlan& P, const KernelSet<float>& ks,
                         const Transforms& tf, const float* in, const float* w,
                         const float* bias, float* out) {
  const int64_t Ci = P.in_channels, mr = P.mr;
  const int64_t tiles = P.batch * P.tiles_h * P.tiles_w, ldv = columns_for(P, tiles);
  const TileTable table(P, 0, tiles);  // few tiles: this schedule runs only while V is small
  const TileOrigins& T = table.origins();
  const float* wt = transposed_weights(P, tf, w);
  float* V = thread_workspace_as<float>(WorkspaceSlot::Columns, 36 * Ci * ldv);
  at::parallel_for(0, Ci, 1, [&](int64_t begin, int64_t end) {
    tf.input(P, T, 0, tiles, in, begin, end, V, ldv);
  });
  at::parallel_for(0, P.slivers, 1, [&](int64_t begin, int64_t end) {
    const int64_t u_e_stride = Ci * mr + kLanes;  // with the weight transform's store slack
    float* U = thread_workspace_as<float>(WorkspaceSlot::WinogradWeights, 36 * u_e_stride);
    float* M = thread_workspace_as<float>(WorkspaceSlot::Staging, 36 * mr * ldv);
    for (int64_t s = begin; s < end; ++s) {
      tf.weights(P, wt, s, U, u_e_stride);
      multiply(ks, P, U, u_e_stride, 0, s, s + 1, V, ldv, tiles, M, mr * ldv, 0, 36);
      const int64_t o0 = s * mr, o1 = std::min(P.out_channels, o0 + mr);
      tf.output(P, T, 0, tiles, M, mr * ldv, ldv, o0, bias, o0, o1, out);
    }
  });
}

}  // namespace

bool winograd_applies(const Conv2dGeometry& g, const Conv2dParams& p) {
  return g.kernel_h == 3 && g.kernel_w == 3 && p.stride[0] == 1 && p.stride[1] == 1 &&
         g.groups == 1 && g.in_channels > 0 &&
         g.out_channels > 0 && g.out_h > 0 && g.out_w > 0 && g.batch > 0;
}

bool winograd_preferred(const Conv2dGeometry& g, const Conv2dParams& p) {
  // Few channels: the products are too thin to repay the transforms. Few tiles: the weight
  // transform (C_in x C_out 3x3 kernels, every call) costs more than the products save; e.g.
  // 1x512x7x7 -> 512 (4 tiles) runs 1.7x faster on im2col, 8x512x7x7 (32 tiles) 1.8x slower.
  constexpr int64_t kMinTiles = 16;
  const int64_t tiles =
      g.batch * tiles_along(g.out_h, p.dilation[0]) * tiles_along(g.out_w, p.dilation[1]);
  // 16 -> 16 channels still run faster on the implicit GEMM (8x16x56x56: 0.69 vs 0.85 ms),
  // 32 -> 32 on Winograd (1.78 vs 2.12 ms).
  return g.in_channels >= 16 && g.out_channels >= 16 && g.in_channels * g.out_channels >= 512 &&
         tiles >= kMinTiles;
}

void winograd_conv2d_3x3(const WinogradProblem& prob, const float* in, const float* w,
                         const float* bias, float* out) {
  const Isa isa = active_isa();
  const KernelSet<float>& ks = gemm_kernels<float>(isa);
  const Transforms tf = transforms_for(isa);
  WinogradPlan P{prob.batch, prob.in_channels, prob.in_h, prob.in_w, prob.out_channels,
                 prob.out_h, prob.out_w, prob.pad_h, prob.pad_w, prob.dil_h, prob.dil_w,
                 prob.flipped_transposed_weight, tiles_along(prob.out_h, prob.dil_h),
                 tiles_along(prob.out_w, prob.dil_w), ks.mr, ks.nr, 0,
                 prob.out_channels + kLanes};
  P.slivers = (P.out_channels + P.mr - 1) / P.mr;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  // A shared U beyond L2-ish sizes, while V of all the tiles is small: go by channel slivers.
  constexpr int64_t kSharedWeightsBytes = int64_t(4) << 20, kAllTilesBytes = int64_t(8) << 20;
  const int64_t u_bytes = 36 * P.slivers * (P.mr * P.in_channels + kLanes) * int64_t(sizeof(float));
  const int64_t v_bytes = 36 * P.in_channels * columns_for(P, P.batch * P.tiles_h * P.tiles_w) *
                          int64_t(sizeof(float));
  if (u_bytes > kSharedWeightsBytes && v_bytes <= kAllTilesBytes)
    run_channel_slivers(P, ks, tf, in, w, bias, out);
  else
    run_tile_blocks(P, ks, tf, threads, in, w, bias, out);
}

}  // namespace cnnext::cpu
