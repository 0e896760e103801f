// The im2col_nhwc row: every convolution geometry on channels_last activations, as bounded
// chunks of NHWC columns times our GEMM, with no layout copies of the activations.
//
// Rows of every GEMM are pixels. In NHWC one tap of one pixel is a contiguous run of a group's
// channels, so a column row is kh*kw runs (im2col_nhwc.h) and the output rows land in place
// with ldc = total channels:
//   forward      out[pix, Og]        = cols[pix, kh*kw*Cg] * Wf[kh*kw*Cg, Og]
//   grad_weight  gw[Og, kh*kw*Cg]   += grad_out^T[Og, pix] * cols[pix, kh*kw*Cg]
//   grad_input   gin[pix, Cg]        = gcols[pix, taps*Og] * Wg[taps*Og, Cg]   (per stride phase)
// grad_input gathers instead of scattering: each input pixel collects the grad_output runs of
// the taps that reach it. Input pixels are split into stride phases ((ih+pad) mod s, (iw+pad)
// mod s), each carrying only its own taps, so every grad_input element is written once.
//
// Chunks of pixel rows fit the per-thread column budget and run in parallel (each thread its
// own columns, a serial GEMM inside) when there are enough; otherwise in order, with the
// gather and the GEMM parallel inside. Weights are repacked per call into the caller's slot
// (the forward's packing goes through the weight cache).
// Which GEMM path runs depends on the columns and K only (kDotColumns), never on a chunk's
// rows: each output element is one fixed FMA chain whatever the chunking, and forward /
// grad_input are bit-identical for every thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "conv2d_workspace.h"
#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "conv_grad_weight_sum.h"
#include "conv_tasks.h"
#include "gemm/gemm.h"
#include "im2col_nhwc.h"
#include "weight_cache.h"

namespace cnnext::cpu {
namespace {

// A chunk's columns aim at this size (they are re-read by the GEMM's packing while still in
// L2) but keep at least kMinRows rows, so the weight packed per chunk is amortised over many
// pixels; the workspace budget caps both.
constexpr int64_t kTargetChunkBytes = int64_t(512) << 10;
constexpr int64_t kMinRows = 256;
// Gathers smaller than this many elements run on one thread.
constexpr int64_t kGatherGrain = int64_t(1) << 14;
// Up to this many GEMM columns (output channels per group forward, input channels per group
// for grad_input) the weight is stored transposed: the GEMM then takes its dot-product path
// instead of padding the columns to a whole micro-tile (stems, small groups). The path depends
// on the column count and K only, never on the chunk's rows, so results stay bit-identical
// across chunkings and thread counts.
constexpr int64_t kDotColumns = 16;

struct RowChunks {
  int64_t count, rows;  // chunks, and rows in each but the last
};

// total rows of row_len elements cut into chunks: within the budget, and (when there is work
// enough for every thread) a multiple of the thread count, so parallel rounds are full.
RowChunks split_rows(int64_t total, int64_t row_len, int64_t elem, int64_t threads) {
  const int64_t row_bytes = std::max<int64_t>(1, row_len * elem);
  const int64_t budget_rows = std::max<int64_t>(1, conv_workspace_budget_bytes() / row_bytes);
  const int64_t max_rows =
      std::min(budget_rows, std::max(kMinRows, kTargetChunkBytes / row_bytes));
  int64_t count = (total + max_rows - 1) / max_rows;
  if (threads > 1 && total >= threads * kMinRows) count = std::max(count, threads);
  if (threads > 1 && count > 1) count = (count + threads - 1) / threads * threads;
  count = std::max<int64_t>(1, std::min(count, total));
  const int64_t rows = (total + count - 1) / count;
  return {(total + rows - 1) / rows, rows};
}

}  // namespace

int64_t im2col_nhwc_chunk_count(int64_t total, int64_t row_len, int64_t elem, int64_t threads) {
  return total <= 0 ? 0 : split_rows(total, row_len, elem, threads).count;  // batch 0: none
}

namespace {

// rows [r0, r1) of a gather, split over the threads when called outside a parallel region.
template <typename F>
void gather_rows(int64_t r0, int64_t r1, int64_t row_len, const F& gather) {
  if (at::in_parallel_region() || at::get_num_threads() == 1) {
    gather(r0, r1);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kGatherGrain / std::max<int64_t>(1, row_len));
  at::parallel_for(r0, r1, grain, gather);
}

bool pointwise_in_place(const Conv2dGeometry& g, const Conv2dParams& p) {
  return is_pointwise(g, p);  // the activation itself is the column matrix
}


// The column rows of output pixels [p0, p1) for group gi, and their pitch: the input itself
// where it serves as the columns (1x1, stride 1, no padding), else gathered into the calling
// thread's column workspace.
template <typename T>
const T* pixel_columns(const ConvProblem& pr, const T* in, bool in_place, int64_t gi, int64_t p0,
                       int64_t p1, int64_t& ld) {
  const Conv2dGeometry& g = pr.g;
  const int64_t Cg = g.in_channels_per_group(), Kr = g.kernel_h * g.kernel_w * Cg;
  if (in_place) {
    ld = g.in_channels;
    return in + p0 * g.in_channels + gi * Cg;
  }
  T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, (p1 - p0) * Kr);
  const ForwardGather f = forward_gather(g, pr.p, gi);
  gather_rows(p0, p1, Kr, [&](int64_t r0, int64_t r1) {
    gather_forward_columns(in, f, r0, r1, col + (r0 - p0) * Kr);
  });
  ld = Kr;
  return col;
}

// ---- forward ---------------------------------------------------------------------------------

template <typename T>
void forward(const ConvProblem& pr, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const int64_t G = g.groups, Cg = g.in_channels_per_group(), Og = g.out_channels_per_group();
  const int64_t KK = g.kernel_h * g.kernel_w, Kr = KK * Cg, O = g.out_channels;
  const T* w = t.weight.data_ptr<T>();
  // Wf[group][kh][kw][cg][og]: B of the forward GEMM, rows read in place; with few output
  // channels per group transposed, Wf[group][og][kh][kw][cg] (OHWI).
  const bool dot = Og <= kDotColumns;
  const auto repack = [&](void* dst) {
    T* wf = static_cast<T*>(dst);
    if (dot) {  // each output channel's row permuted within itself (it stays in L1)
      at::parallel_for(0, O, 16, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
          const int64_t gi = o / Og, og = o % Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t k = 0; k < KK; ++k)
              wf[gi * Kr * Og + og * Kr + k * Cg + c] = w[(o * Cg + c) * KK + k];
        }
      });
      return;
    }
    // A transpose: output channels become the fast index. Written one tile at a time (16
    // output channels x 16 input channels x the taps, a few KiB read from L1) so each store
    // fills whole lines; the plain loop wrote one element per Og-strided line, a cache and
    // TLB miss each (a 512x512x3x3 weight: 9 ms against 1 ms for the whole layer).
    constexpr int64_t kTile = 16;
    const int64_t o_tiles = (Og + kTile - 1) / kTile;
    at::parallel_for(0, G * o_tiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t gi = task / o_tiles, og0 = (task % o_tiles) * kTile;
        const int64_t og1 = std::min(Og, og0 + kTile);
        const T* src = w + (gi * Og) * Cg * KK;
        T* group_dst = wf + gi * Kr * Og;
        for (int64_t c0 = 0; c0 < Cg; c0 += kTile) {
          const int64_t c1 = std::min(Cg, c0 + kTile);
          for (int64_t k = 0; k < KK; ++k)
            for (int64_t c = c0; c < c1; ++c) {
              T* d = group_dst + (k * Cg + c) * Og;
              for (int64_t og = og0; og < og1; ++og) d[og] = src[(og * Cg + c) * KK + k];
            }
        }
      }
    });
  };
  // An unchanged weight's runs are reused (weight_cache.h).
  const at::Tensor cached = cached_packed_weight(
      weight_pack_kind({kIm2colNhwcRuns, int64_t(sizeof(T)), O, Cg, g.kernel_h, g.kernel_w,
                        G, int64_t(dot)}),
      size_t(O * Kr) * sizeof(T), repack);
  const T* wf = cached.defined() ? static_cast<const T*>(cached.data_ptr()) : nullptr;
  if (wf == nullptr) {
    T* ws = thread_workspace_as<T>(WorkspaceSlot::PackedWeights, O * Kr);
    repack(ws);
    wf = ws;
  }
  const T* in = t.input.data_ptr<T>();
  const T* bias = t.bias.defined() ? t.bias.data_ptr<T>() : nullptr;
  T* out = t.output.data_ptr<T>();
  const bool in_place = pointwise_in_place(g, pr.p);
  const int64_t pixels = g.batch * g.out_plane();
  const RowChunks ch = split_rows(pixels, in_place ? 0 : Kr, sizeof(T), pr.threads);
  run_conv_tasks(ch.count * G, pr.threads, [&](int64_t task) {
    const int64_t gi = task % G, c = task / G;
    const int64_t p0 = c * ch.rows, p1 = std::min(pixels, p0 + ch.rows), rows = p1 - p0;
    int64_t lda = 0;
    const T* a = pixel_columns(pr, in, in_place, gi, p0, p1, lda);
    T* c_out = out + p0 * O + gi * Og;
    T beta = 0;
    if (bias != nullptr) {  // bias pre-filled, then the GEMM accumulates onto it
      for (int64_t r = 0; r < rows; ++r)
        std::copy(bias + gi * Og, bias + (gi + 1) * Og, c_out + r * O);
      beta = 1;
    }
    gemm<T>(false, dot, rows, Og, Kr, T(1), a, lda, wf + gi * Kr * Og, dot ? Kr : Og, beta,
            c_out, O);
  });
}

// ---- grad_weight -----------------------------------------------------------------------------

template <typename T>
void grad_weight(const ConvProblem& pr, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const int64_t G = g.groups, Cg = g.in_channels_per_group(), Og = g.out_channels_per_group();
  const int64_t KK = g.kernel_h * g.kernel_w, Kr = KK * Cg, O = g.out_channels;
  const T* in = t.input.data_ptr<T>();
  const T* go = t.grad_output.data_ptr<T>();
  const bool in_place = pointwise_in_place(g, pr.p);
  const int64_t pixels = g.batch * g.out_plane();
  const RowChunks ch = split_rows(pixels, in_place ? 0 : Kr, sizeof(T), pr.threads);
  // Sums in [o][kh][kw][c] (the GEMM's C), permuted to OIHW at the end.
  T* gwp = thread_workspace_as<T>(WorkspaceSlot::PackedWeights, O * Kr);
  sum_grad_weight_over_images(ch.count, pr.threads, gwp, O * Kr,
                              [&](int64_t c0, int64_t c1, T* acc) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p0 = c * ch.rows, p1 = std::min(pixels, p0 + ch.rows), rows = p1 - p0;
      for (int64_t gi = 0; gi < G; ++gi) {
        int64_t ldb = 0;
        const T* b = pixel_columns(pr, in, in_place, gi, p0, p1, ldb);
        gemm<T>(true, false, Og, Kr, rows, T(1), go + p0 * O + gi * Og, O, b, ldb, T(1),
                acc + gi * Og * Kr, Kr);
      }
    }
  });
  T* gw = t.grad_weight.data_ptr<T>();
  at::parallel_for(0, O, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t k = 0; k < KK; ++k) gw[(o * Cg + c) * KK + k] = gwp[o * Kr + k * Cg + c];
  });
}

// ---- grad_input ------------------------------------------------------------------------------

struct GradInputTask {
  int64_t group, phase, q0, q1;
};

template <typename T>
void grad_input(const ConvProblem& pr, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const Conv2dParams& p = pr.p;
  const int64_t G = g.groups, Cg = g.in_channels_per_group(), Og = g.out_channels_per_group();
  const int64_t KK = g.kernel_h * g.kernel_w, C = g.in_channels, O = g.out_channels;
  const Phases ph(g, p);
  // Wg[group][phase taps][og][cg]: per phase, B of its GEMM ([taps * Og] x Cg, rows in place);
  // with few input channels per group transposed, per phase [cg][taps * Og].
  const bool dot = Cg <= kDotColumns;
  T* wg = thread_workspace_as<T>(WorkspaceSlot::PackedWeights, O * KK * Cg);
  const T* w = t.weight.data_ptr<T>();
  at::parallel_for(0, O, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t gi = o / Og, og = o % Og;
      for (size_t f = 0; f < ph.phases.size(); ++f) {
        const InputPhase& phase = ph.phases[f];
        const int64_t L = phase.ntaps_h * phase.ntaps_w * Og;
        T* base = wg + (gi * KK + ph.tap_offset[f]) * Og * Cg;
        for (int64_t a = 0; a < phase.ntaps_h; ++a)
          for (int64_t b = 0; b < phase.ntaps_w; ++b) {
            const int64_t k = phase.taps_h[a] * g.kernel_w + phase.taps_w[b];
            const int64_t row = (a * phase.ntaps_w + b) * Og + og;  // of [taps * Og]
            for (int64_t c = 0; c < Cg; ++c)
              base[dot ? c * L + row : row * Cg + c] = w[(o * Cg + c) * KK + k];
          }
      }
    }
  });
  const bool in_place = pointwise_in_place(g, p);
  const bool unit_stride = p.stride[0] == 1 && p.stride[1] == 1;  // one phase: rows in order
  std::vector<GradInputTask> tasks;
  for (int64_t f = 0; f < static_cast<int64_t>(ph.phases.size()); ++f) {
    const InputPhase& phase = ph.phases[f];
    const int64_t total = g.batch * phase.pixels_per_image();
    if (total == 0) continue;
    const int64_t row_len = in_place ? 0 : std::max(phase.ntaps_h * phase.ntaps_w * Og, Cg);
    const RowChunks ch = split_rows(total, row_len, sizeof(T), pr.threads);
    for (int64_t c = 0; c < ch.count; ++c)
      for (int64_t gi = 0; gi < G; ++gi)
        tasks.push_back({gi, f, c * ch.rows, std::min(total, (c + 1) * ch.rows)});
  }
  const GradInputGather gather{{g.out_h, g.out_w, O, 0, Og}, g.in_h, g.in_w, p.stride[0],
                               p.stride[1], p.padding[0], p.padding[1], p.dilation[0],
                               p.dilation[1]};
  const T* go = t.grad_output.data_ptr<T>();
  T* gin = t.grad_input.data_ptr<T>();
  const auto pixel_offset = [&](const InputPhase& phase, int64_t q) {
    const PhasePixel px = phase_pixel(phase, p.stride[0], p.stride[1], q);
    return ((px.n * g.in_h + px.ih) * g.in_w + px.iw) * C;
  };
  run_conv_tasks(static_cast<int64_t>(tasks.size()), pr.threads, [&](int64_t k) {
    const GradInputTask& task = tasks[k];
    const InputPhase& phase = ph.phases[task.phase];
    const int64_t rows = task.q1 - task.q0, taps = phase.ntaps_h * phase.ntaps_w;
    const int64_t c0 = task.group * Cg;
    if (taps == 0) {  // no tap reaches these pixels
      for (int64_t q = task.q0; q < task.q1; ++q) zero_run(gin + pixel_offset(phase, q) + c0, Cg);
      return;
    }
    const int64_t L = taps * Og;
    const T* a = go + task.q0 * O + task.group * Og;  // pointwise: grad_output is the columns
    int64_t lda = O;
    if (!in_place) {
      T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, rows * L);
      GradInputGather f = gather;
      f.go.c0 = task.group * Og;
      gather_rows(task.q0, task.q1, L, [&](int64_t r0, int64_t r1) {
        gather_grad_input_columns(go, f, phase, r0, r1, col + (r0 - task.q0) * L);
      });
      a = col;
      lda = L;
    }
    const T* b = wg + (task.group * KK + ph.tap_offset[task.phase]) * Og * Cg;
    if (unit_stride) {  // phase pixels are grad_input's own rows
      gemm<T>(false, dot, rows, Cg, L, T(1), a, lda, b, dot ? L : Cg, T(0),
              gin + task.q0 * C + c0, C);
      return;
    }
    T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, rows * Cg);
    gemm<T>(false, dot, rows, Cg, L, T(1), a, lda, b, dot ? L : Cg, T(0), stage, Cg);
    for (int64_t q = task.q0; q < task.q1; ++q)
      copy_run(gin + pixel_offset(phase, q) + c0, stage + (q - task.q0) * Cg, Cg);
  });
}

// ---- the row ---------------------------------------------------------------------------------

bool applies(const ConvProblem& pr, ConvPass) {
  // The NHWC fallback: every geometry, float32 and float64.
  return pr.channels_last && (pr.dtype == at::kFloat || pr.dtype == at::kDouble);
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::Im2colNhwc, pr, pass);
}

void run_blocks(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_im2col_nhwc", [&] {
    switch (pass) {
      case ConvPass::Forward:
        forward<scalar_t>(pr, t);
        break;
      case ConvPass::GradInput:
        grad_input<scalar_t>(pr, t);
        break;
      case ConvPass::GradWeight:
        grad_weight<scalar_t>(pr, t);
        break;
    }
  });
}

// Groups narrower than a micro-tile (ResNeXt: 4 channels per group) make GEMMs a few columns
// wide, padded to a whole tile, with K of a few dozen. Instead, block consecutive groups into
// one: a convolution with groups G equals one with groups G/b and a block-diagonal weight
// (zeros between the groups of a block). The zeros cost about what the padding did, but the
// GEMMs are full-width, deep, and b times fewer; the gathers copy runs b times longer.
constexpr int64_t kBlockChannels = 32;

int64_t groups_per_block(const Conv2dGeometry& g) {
  const int64_t width = std::max(g.in_channels_per_group(), g.out_channels_per_group());
  int64_t best = 1;
  for (int64_t b = 2; b <= g.groups && b * width <= kBlockChannels; ++b)
    if (g.groups % b == 0) best = b;
  return best;
}

// Views of an OIHW weight (or its gradient) as [blocks][b][Og][b or 1][Cg][kh*kw].
at::Tensor block_view(const at::Tensor& w, const Conv2dGeometry& g, int64_t b, bool expanded) {
  return w.view({g.groups / b, b, g.out_channels_per_group(), expanded ? b : 1,
                 g.in_channels_per_group(), g.kernel_h * g.kernel_w});
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const Conv2dGeometry& g = pr.g;
  const int64_t b = groups_per_block(g);
  if (b == 1) {
    run_blocks(pr, pass, t);
    return;
  }
  ConvProblem blocked = pr;
  blocked.g.groups = blocked.p.groups = g.groups / b;
  ConvTensors bt = t;
  const auto options = t.weight.defined() ? t.weight.options() : t.grad_weight.options();
  const at::Tensor expanded = at::zeros(
      {g.out_channels, b * g.in_channels_per_group(), g.kernel_h, g.kernel_w}, options);
  const at::Tensor diag = block_view(expanded, g, b, true);
  if (pass == ConvPass::GradWeight) {
    bt.grad_weight = expanded;
    run_blocks(blocked, pass, bt);
    const at::Tensor gw = block_view(t.grad_weight, g, b, false);
    for (int64_t j = 0; j < b; ++j)
      gw.select(1, j).select(2, 0).copy_(diag.select(1, j).select(2, j));
    return;
  }
  const at::Tensor w = block_view(t.weight, g, b, false);
  for (int64_t j = 0; j < b; ++j)
    diag.select(1, j).select(2, j).copy_(w.select(1, j).select(2, 0));
  bt.weight = expanded;
  run_blocks(blocked, pass, bt);
}

}  // namespace

const ConvAlgorithm kIm2colNhwcAlgorithm{"im2col_nhwc", applies, cost, run};

}  // namespace cnnext::cpu
