// The bfloat16 NHWC forward and grad_input (conv2d_bf16_nhwc.h). Per task: a block of pixels
// of one group (and stride phase) is gathered into rows of reduction pairs (in place for a 1x1
// stride-1 layer), packed into kMR-row slivers, and multiplied with every column panel of the
// packed weight (or a share of them, when there are too few pixel blocks to occupy the
// threads).
#include "conv2d_bf16_nhwc.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "conv2d_workspace.h"
#include "conv_algorithms.h"
#include "gemm/bf16_dot.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "im2col_nhwc.h"
#include "weight_cache.h"

namespace cnnext::cpu {
namespace {

using bf16::kMR;
using bf16::kNR;

// A block of pixel rows stays in L2 while every column panel passes over it.
constexpr int64_t kRowBlockBytes = 192 << 10;
constexpr int64_t kMaxSliversPerBlock = 8;
// Up to this many packed bytes, all pixels form one block (see make_plan).
constexpr int64_t kWholeBytes = 768 << 10;

// Pixel rows per task: a block whose slivers stay in L2 while the panels pass over them,
// smaller where that leaves fewer than two blocks per thread (`parallel` independent
// products share the threads).
int64_t block_rows_for(int64_t kp_count, int64_t pixels, int64_t parallel, int64_t threads) {
  const int64_t sliver_bytes = kp_count * 4 * kMR;
  int64_t slivers_per_block =
      std::clamp<int64_t>(kRowBlockBytes / std::max<int64_t>(sliver_bytes, 1), 1,
                          kMaxSliversPerBlock);
  const int64_t slivers = (pixels + kMR - 1) / kMR;
  const int64_t want_blocks = (2 * threads + parallel - 1) / parallel;
  if ((slivers + slivers_per_block - 1) / slivers_per_block < want_blocks)
    slivers_per_block = std::max<int64_t>(1, slivers / want_blocks);
  return slivers_per_block * kMR;
}

struct Plan {
  int64_t groups, cg, og, k, kp_count;  // kp_count: reduction pairs (k rounded up, halved)
  int64_t panels;                        // kNR-column panels per group
  int64_t pixels, slivers_per_block, block_rows, row_blocks, panel_chunks, panels_per_chunk;
  bool in_place;  // 1x1 stride 1, even channel counts: rows read from the input
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Plan make_plan(const Conv2dGeometry& g, const Conv2dParams& p, int64_t threads) {
  Plan pl{};
  pl.groups = g.groups;
  pl.cg = g.in_channels_per_group();
  pl.og = g.out_channels_per_group();
  pl.k = g.col_rows();
  pl.kp_count = ceil_div(pl.k, 2);
  pl.panels = ceil_div(pl.og, kNR);
  pl.pixels = g.batch * g.out_plane();
  pl.in_place = is_pointwise(g, p) && pl.cg % 2 == 0 && g.in_channels % 2 == 0;
  pl.block_rows = block_rows_for(pl.kp_count, pl.pixels, pl.groups, threads);
  // Few pixels (late layers at batch 1): every task takes all of them, packed once per task
  // and kept in L2, and a share of the panels, so the weight is read from memory once.
  const int64_t all_rows = ceil_div(pl.pixels, kMR) * kMR;
  if (pl.groups == 1 && pl.panels >= 2 * threads && all_rows * pl.kp_count * 4 <= kWholeBytes)
    pl.block_rows = all_rows;
  pl.slivers_per_block = pl.block_rows / kMR;
  pl.row_blocks = ceil_div(pl.pixels, pl.block_rows);
  // Still too few tasks (late layers at batch 1): split the panels too.
  const int64_t tasks = pl.groups * pl.row_blocks;
  pl.panel_chunks = tasks >= 2 * threads ? 1 : std::min(pl.panels, ceil_div(2 * threads, tasks));
  pl.panels_per_chunk = ceil_div(pl.panels, pl.panel_chunks);
  pl.panel_chunks = ceil_div(pl.panels, pl.panels_per_chunk);
  return pl;
}

// Bp[group][panel][kp][j][2]: the pair (W[o][k = 2kp], W[o][2kp + 1]) of output channel
// o = panel * kNR + j, reduction index k = (kh * kernel_w + kw) * cg + c (tap-major, as the
// gathered rows); zeros past og and past k. Two passes: OHWI rows padded to an even length,
// then the float32 packer's column slivers, a pair being 32 bits.
void pack_weight_panels(const gemm_detail::KernelSet<float>& fk, const uint16_t* w,
                        const Conv2dGeometry& g, const Plan& pl, uint16_t* dst) {
  const int64_t taps = g.kernel_h * g.kernel_w, kp2 = 2 * pl.kp_count;
  const int64_t panel_elems = pl.kp_count * 2 * kNR;
  std::vector<uint16_t> rows(size_t(pl.groups * pl.og * kp2));
  at::parallel_for(0, pl.groups * pl.og, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      uint16_t* r = rows.data() + o * kp2;
      const uint16_t* wo = w + o * pl.cg * taps;
      for (int64_t c = 0; c < pl.cg; ++c)
        for (int64_t t = 0; t < taps; ++t) r[t * pl.cg + c] = wo[c * taps + t];
      if (kp2 > pl.k) r[pl.k] = 0;
    }
  });
  at::parallel_for(0, pl.groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t gi = g0; gi < g1; ++gi)
      fk.pack_b_cols(reinterpret_cast<const float*>(rows.data() + gi * pl.og * kp2),
                     pl.kp_count, pl.kp_count, pl.og,
                     reinterpret_cast<float*>(dst + gi * pl.panels * panel_elems));
  });
}

// out[i][c] (i < rows, col0 <= c < col1) = sum over k of a[i][k] * B[k][c] (+ bias[c - col0])
// for rows of kp_count reduction pairs at a (stride lda, even), B's panels from `panels` on
// (the panel holding col0 first), out at row stride ld_out. slivers: room for the block.
void multiply_block(const gemm_detail::KernelSet<float>& fk, const uint16_t* a, int64_t lda,
                    int64_t rows, int64_t kp_count, const uint16_t* panels, const float* bias,
                    int64_t col0, int64_t col1, uint16_t* out, int64_t ld_out,
                    uint32_t* slivers) {
  // A pair is 32 bits: the float32 packer moves pairs without looking at them.
  fk.pack_a_rows(reinterpret_cast<const float*>(a), lda / 2, rows, kp_count,
                 reinterpret_cast<float*>(slivers));
  const int64_t sliver_elems = kp_count * kMR;
  bf16::PanelProduct pp{};
  pp.kp_count = kp_count;
  pp.a_stride = kMR;
  pp.b_stride = 2 * kNR;
  pp.ld_out = ld_out;
  for (int64_t c = col0, i = 0; c < col1; c += kNR, ++i) {
    pp.b_panel = panels + i * kp_count * 2 * kNR;
    pp.bias = bias + i * kNR;
    pp.n = std::min<int64_t>(kNR, col1 - c);
    for (int64_t s = 0; s * kMR < rows; ++s) {
      pp.a_sliver = slivers + s * sliver_elems;
      pp.rows = std::min<int64_t>(kMR, rows - s * kMR);
      pp.out = out + s * kMR * ld_out + c;
      bf16::panel_product(pp);
    }
  }
}

// weight_to_pack: the OIHW weight of g (made only when the packed form is not cached).
void forward_impl(const at::Tensor& input, const std::function<at::Tensor()>& weight_to_pack,
                  const at::Tensor& bias, at::Tensor& output, const Conv2dGeometry& g,
                  const Conv2dParams& p) {
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const Plan pl = make_plan(g, p, threads);
  const auto& fk = gemm_kernels<float>(Isa::Avx512);
  TORCH_INTERNAL_ASSERT(fk.mr == kMR && fk.nr == kNR && fk.pack_a_rows != nullptr &&
                            fk.pack_b_cols != nullptr,
                        "bf16 slivers and panels are packed by the float32 AVX-512 packers");
  const size_t packed_elems = size_t(pl.groups * pl.panels * pl.kp_count * 2 * kNR);
  const auto pack = [&](void* dst) {
    const at::Tensor weight = weight_to_pack();
    pack_weight_panels(fk, reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()), g,
                       pl, static_cast<uint16_t*>(dst));
  };
  at::Tensor packed = cached_packed_weight(
      weight_pack_kind({kBf16DotPanels, pl.groups, pl.og, pl.cg, g.kernel_h, g.kernel_w}),
      packed_elems * sizeof(uint16_t), pack);
  if (!packed.defined()) {
    packed = at::empty({int64_t(packed_elems)}, input.options().dtype(at::kShort));
    pack(packed.data_ptr());
  }
  const auto* bp = static_cast<const uint16_t*>(packed.data_ptr());
  // Bias as float32 panels, zero past og.
  std::vector<float> bias_f(size_t(pl.groups * pl.panels * kNR), 0.0f);
  if (bias.defined()) {
    const at::BFloat16* b = bias.data_ptr<at::BFloat16>();
    for (int64_t gi = 0; gi < pl.groups; ++gi)
      for (int64_t o = 0; o < pl.og; ++o)
        bias_f[size_t(gi * pl.panels * kNR + o)] = static_cast<float>(b[gi * pl.og + o]);
  }
  const auto* in = reinterpret_cast<const uint16_t*>(input.data_ptr<at::BFloat16>());
  auto* out = reinterpret_cast<uint16_t*>(output.data_ptr<at::BFloat16>());
  const int64_t C = g.in_channels, O = g.out_channels, kp2 = 2 * pl.kp_count;
  const int64_t tasks = pl.groups * pl.row_blocks * pl.panel_chunks;
  const int64_t sliver_elems = pl.kp_count * kMR;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    uint16_t* rows_buf = pl.in_place ? nullptr
                                     : thread_workspace_as<uint16_t>(WorkspaceSlot::Columns,
                                                                     pl.block_rows * kp2);
    uint32_t* slivers = thread_workspace_as<uint32_t>(WorkspaceSlot::Staging,
                                                      pl.slivers_per_block * sliver_elems);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % pl.panel_chunks, rest = task / pl.panel_chunks;
      const int64_t gi = rest % pl.groups, blk = rest / pl.groups;
      const int64_t m0 = blk * pl.block_rows, rows = std::min(pl.block_rows, pl.pixels - m0);
      const uint16_t* a = nullptr;
      int64_t lda = 0;
      if (pl.in_place) {
        a = in + m0 * C + gi * pl.cg;
        lda = C;
      } else {
        gather_forward_columns(in, forward_gather(g, p, gi), m0, m0 + rows, rows_buf, kp2);
        a = rows_buf;
        lda = kp2;
      }
      const int64_t panel0 = chunk * pl.panels_per_chunk;
      multiply_block(fk, a, lda, rows, pl.kp_count,
                     bp + (gi * pl.panels + panel0) * pl.kp_count * 2 * kNR,
                     bias_f.data() + (gi * pl.panels + panel0) * kNR, panel0 * kNR,
                     std::min(pl.og, (panel0 + pl.panels_per_chunk) * kNR),
                     out + m0 * O + gi * pl.og, O, slivers);
    }
  });
}

// ---- grad_input ------------------------------------------------------------------------------

void grad_input_impl(const at::Tensor& grad_output, const at::Tensor& weight,
                     at::Tensor& grad_input, const Conv2dGeometry& g, const Conv2dParams& p) {
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const auto& fk = gemm_kernels<float>(Isa::Avx512);
  TORCH_INTERNAL_ASSERT(fk.mr == kMR && fk.nr == kNR && fk.pack_a_rows != nullptr &&
                            fk.pack_b_cols != nullptr,
                        "bf16 slivers and panels are packed by the float32 AVX-512 packers");
  const int64_t G = g.groups, Cg = g.in_channels_per_group(), Og = g.out_channels_per_group();
  const int64_t C = g.in_channels, O = g.out_channels, taps = g.kernel_h * g.kernel_w;
  const int64_t panels = ceil_div(Cg, kNR);
  const Phases ph(g, p);
  const int64_t nphases = static_cast<int64_t>(ph.phases.size());
  // Per phase: reduction pairs and the offset of its panels in the packed weight
  // [group][phase][panel][kp][j][2], reduction index (a * ntaps_w + b) * Og + o.
  std::vector<int64_t> kp_count(nphases), packed_at(nphases + 1, 0);
  for (int64_t f = 0; f < nphases; ++f) {
    const InputPhase& phase = ph.phases[f];
    kp_count[f] = ceil_div(phase.ntaps_h * phase.ntaps_w * Og, 2);
    packed_at[f + 1] = packed_at[f] + panels * kp_count[f] * 2 * kNR;
  }
  const int64_t per_group = packed_at[nphases];
  at::Tensor packed = at::empty({G * per_group}, weight.options().dtype(at::kShort));
  auto* bp = static_cast<uint16_t*>(packed.data_ptr());
  const auto* w = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  // Per (group, phase): rows c of the phase's reduction (a * ntaps_w + b) * Og + o, padded to
  // even, then the float32 packer's column slivers (a pair is 32 bits).
  at::parallel_for(0, G * nphases, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> rows;
    for (int64_t gf = begin; gf < end; ++gf) {
      const int64_t gi = gf / nphases, f = gf % nphases;
      const InputPhase& phase = ph.phases[f];
      const int64_t kp2 = 2 * kp_count[f];
      rows.assign(size_t(Cg * kp2), 0);
      // Blocks of 16 out channels: their weights stay in cache while every row takes its
      // 16 neighbouring values.
      for (int64_t o0 = 0; o0 < Og; o0 += 16) {
        const int64_t o1 = std::min(Og, o0 + 16);
        for (int64_t a = 0; a < phase.ntaps_h; ++a)
          for (int64_t b = 0; b < phase.ntaps_w; ++b) {
            const int64_t tap = phase.taps_h[a] * g.kernel_w + phase.taps_w[b];
            const int64_t k0 = (a * phase.ntaps_w + b) * Og;
            for (int64_t c = 0; c < Cg; ++c) {
              uint16_t* r = rows.data() + c * kp2 + k0;
              for (int64_t o = o0; o < o1; ++o) r[o] = w[((gi * Og + o) * Cg + c) * taps + tap];
            }
          }
      }
      fk.pack_b_cols(reinterpret_cast<const float*>(rows.data()), kp_count[f], kp_count[f], Cg,
                     reinterpret_cast<float*>(bp + gi * per_group + packed_at[f]));
    }
  });
  const std::vector<float> no_bias(size_t(panels * kNR), 0.0f);
  const auto* go = reinterpret_cast<const uint16_t*>(grad_output.data_ptr<at::BFloat16>());
  auto* gin = reinterpret_cast<uint16_t*>(grad_input.data_ptr<at::BFloat16>());
  const GradInputGather f{{g.out_h, g.out_w, O, 0, Og}, g.in_h, g.in_w, p.stride[0],
                          p.stride[1], p.padding[0], p.padding[1], p.dilation[0],
                          p.dilation[1]};
  // 1x1 stride 1: grad_output's rows are the reduction rows, grad_input's the result rows.
  const bool in_place = is_pointwise(g, p) && Og % 2 == 0 && O % 2 == 0;
  const bool unit_stride = nphases == 1;  // phase pixels are grad_input's rows in order
  struct Task {
    int64_t group, phase, q0, q1;
  };
  std::vector<Task> tasks;
  int64_t max_block = kMR, max_kp = 1;
  for (int64_t fi = 0; fi < nphases; ++fi) {
    const int64_t total = g.batch * ph.phases[fi].pixels_per_image();
    const int64_t block = block_rows_for(kp_count[fi], total, G * nphases, threads);
    max_block = std::max(max_block, block);
    max_kp = std::max(max_kp, kp_count[fi]);
    for (int64_t gi = 0; gi < G; ++gi)
      for (int64_t q0 = 0; q0 < total; q0 += block)
        tasks.push_back({gi, fi, q0, std::min(total, q0 + block)});
  }
  const auto pixel_offset = [&](const InputPhase& phase, int64_t q) {
    const PhasePixel px = phase_pixel(phase, p.stride[0], p.stride[1], q);
    return ((px.n * g.in_h + px.ih) * g.in_w + px.iw) * C;
  };
  at::parallel_for(0, int64_t(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    uint16_t* rows_buf =
        thread_workspace_as<uint16_t>(WorkspaceSlot::Columns, max_block * 2 * max_kp);
    uint32_t* slivers =
        thread_workspace_as<uint32_t>(WorkspaceSlot::Staging, max_block * max_kp);
    uint16_t* stage = thread_workspace_as<uint16_t>(WorkspaceSlot::Partials, max_block * Cg);
    for (int64_t ti = begin; ti < end; ++ti) {
      const Task& task = tasks[size_t(ti)];
      const InputPhase& phase = ph.phases[task.phase];
      const int64_t rows = task.q1 - task.q0, kp = kp_count[task.phase];
      const int64_t c0 = task.group * Cg;
      if (phase.ntaps_h * phase.ntaps_w == 0) {  // no tap reaches these pixels
        for (int64_t q = task.q0; q < task.q1; ++q) zero_run(gin + pixel_offset(phase, q) + c0, Cg);
        continue;
      }
      const uint16_t* a = nullptr;
      int64_t lda = 0;
      if (in_place) {
        a = go + task.q0 * O + task.group * Og;
        lda = O;
      } else {
        GradInputGather fg = f;
        fg.go.c0 = task.group * Og;
        const int64_t k = phase.ntaps_h * phase.ntaps_w * Og;
        for (int64_t i = 0; i < rows; ++i) {
          uint16_t* row = rows_buf + i * 2 * kp;
          gather_grad_input_columns(go, fg, phase, task.q0 + i, task.q0 + i + 1, row);
          if (2 * kp > k) row[k] = 0;
        }
        a = rows_buf;
        lda = 2 * kp;
      }
      const uint16_t* panels_g = bp + task.group * per_group + packed_at[task.phase];
      if (unit_stride) {
        multiply_block(fk, a, lda, rows, kp, panels_g, no_bias.data(), 0, Cg,
                       gin + task.q0 * C + c0, C, slivers);
      } else {
        multiply_block(fk, a, lda, rows, kp, panels_g, no_bias.data(), 0, Cg, stage, Cg,
                       slivers);
        for (int64_t q = task.q0; q < task.q1; ++q)
          copy_run(gin + pixel_offset(phase, q) + c0, stage + (q - task.q0) * Cg, Cg);
      }
    }
  });
}

// ---- grad_weight -----------------------------------------------------------------------------

// Pixels per chunk of the reduction: the chunk's interleaved grad_output and columns of every
// group stay in L2 while the tiles pass over them.
constexpr int64_t kChunkBytes = 768 << 10;

void grad_weight_impl(const at::Tensor& grad_output, const at::Tensor& input,
                      at::Tensor& grad_weight, const Conv2dGeometry& g, const Conv2dParams& p) {
  const int64_t G = g.groups, Cg = g.in_channels_per_group(), Og = g.out_channels_per_group();
  const int64_t O = g.out_channels, taps = g.kernel_h * g.kernel_w, K = g.col_rows();
  const int64_t pixels = g.batch * g.out_plane();
  const int64_t chunk =
      std::clamp<int64_t>(kChunkBytes / (2 * (K * G + O)), 128, 16384) & ~int64_t(1);
  const int64_t max_pairs = std::min(chunk, pixels + 1) / 2 + 1;
  // I[mp][o]: grad_output pixel pairs; J[group][mp][k]: column pairs (+ one panel of slack:
  // a panel's load past a row's last column stays in the buffer, its lanes never stored).
  std::vector<uint32_t> pairs_go(size_t(max_pairs * O));
  std::vector<uint16_t> pairs_col(size_t(G * max_pairs * 2 * K + 2 * kNR));
  at::Tensor acc = at::zeros({G, Og, K}, grad_weight.options().dtype(at::kFloat));
  float* dw = acc.data_ptr<float>();
  const auto* go = reinterpret_cast<const uint16_t*>(grad_output.data_ptr<at::BFloat16>());
  const auto* in = reinterpret_cast<const uint16_t*>(input.data_ptr<at::BFloat16>());
  // Out channels in equal blocks of at most kMR (16 as 8 + 8, not 14 + 2: the tiles of a
  // narrow layer are few, and one short tile would leave a thread idle).
  const int64_t row_blocks = ceil_div(Og, kMR), col_panels = ceil_div(K, kNR);
  const int64_t block_rows = ceil_div(Og, row_blocks);
  const bool pointwise = is_pointwise(g, p);
  const std::vector<float> no_bias(kNR, 0.0f);
  for (int64_t m0 = 0; m0 < pixels; m0 += chunk) {
    const int64_t rows = std::min(chunk, pixels - m0), npairs = ceil_div(rows, 2);
    at::parallel_for(0, npairs, 16, [&](int64_t begin, int64_t end) {
      uint16_t* cols = thread_workspace_as<uint16_t>(WorkspaceSlot::Columns, 2 * K);
      const int64_t m = m0 + 2 * begin, range_rows = std::min(2 * (end - begin), rows - 2 * begin);
      bf16::interleave_row_pairs(go + m * O, O, range_rows, O,
                                 reinterpret_cast<uint16_t*>(pairs_go.data() + begin * O));
      for (int64_t gi = 0; gi < G; ++gi) {
        uint16_t* dst = pairs_col.data() + (gi * max_pairs + begin) * 2 * K;
        if (pointwise) {  // the input's own rows are the columns
          bf16::interleave_row_pairs(in + m * g.in_channels + gi * Cg, g.in_channels, range_rows,
                                     K, dst);
          continue;
        }
        for (int64_t mp = begin; mp < end; ++mp, dst += 2 * K) {
          const int64_t r = m0 + 2 * mp;
          const bool pair = 2 * mp + 1 < rows;
          gather_forward_columns(in, forward_gather(g, p, gi), r, r + (pair ? 2 : 1), cols);
          bf16::interleave_row_pairs(cols, K, pair ? 2 : 1, K, dst);
        }
      }
    });
    // Tiles (group, column panel, row block), row blocks innermost: a panel's columns are
    // reused across the out channels.
    at::parallel_for(0, G * col_panels * row_blocks, 1, [&](int64_t begin, int64_t end) {
      bf16::PanelProduct pp{};
      pp.kp_count = npairs;
      pp.a_stride = O;
      pp.b_stride = 2 * K;
      pp.bias = no_bias.data();
      pp.ld_out = K;
      pp.accumulate = m0 > 0;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t rb = t % row_blocks, rest = t / row_blocks;
        const int64_t panel = rest % col_panels, gi = rest / col_panels;
        const int64_t o0 = rb * block_rows, k0 = panel * kNR;
        pp.a_sliver = pairs_go.data() + gi * Og + o0;
        pp.b_panel = pairs_col.data() + gi * max_pairs * 2 * K + 2 * k0;
        pp.rows = std::min(block_rows, Og - o0);
        pp.n = std::min<int64_t>(kNR, K - k0);
        pp.out_f32 = dw + (gi * Og + o0) * K + k0;
        bf16::panel_product(pp);
      }
    });
  }
  // [group][o][tap][c] float32 -> OIHW bfloat16.
  at::BFloat16* gw = grad_weight.data_ptr<at::BFloat16>();
  at::parallel_for(0, O, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < Cg; ++c)
          gw[(o * Cg + c) * taps + t] = static_cast<at::BFloat16>(dw[o * K + t * Cg + c]);
  });
}

// ---- groups with few channels: several merged into one product ------------------------------

// How many neighbouring groups share a product: a group's output channels fill a 32-column
// panel poorly below 16 (ResNeXt's 4, RegNet's 8), so gp groups whose channels are
// neighbours in NHWC run as one group of gp * og columns with a block-diagonal weight. The
// zeros cost gp times the products, and save the per-group gathers and panel waste.
int64_t merged_groups(const Conv2dGeometry& g) {
  const int64_t og = g.out_channels_per_group();
  int64_t best = 1;
  if (og >= kNR / 2) return best;
  for (int64_t gp = 2; gp * og <= kNR; ++gp)
    if (g.groups % gp == 0) best = gp;
  return best;
}

Conv2dGeometry merged_geometry(const Conv2dGeometry& g, int64_t gp) {
  Conv2dGeometry m = g;
  m.groups = g.groups / gp;
  return m;
}

// [groups/gp * gp*og][gp*cg][kh][kw]: group j of merged group q at the diagonal block j.
at::Tensor block_diagonal_weight(const at::Tensor& weight, const Conv2dGeometry& g, int64_t gp) {
  const int64_t og = g.out_channels_per_group(), cg = g.in_channels_per_group();
  at::Tensor merged = at::zeros({g.out_channels, gp * cg, g.kernel_h, g.kernel_w},
                                weight.options());
  const auto blocks = weight.view({g.groups / gp, gp, og, cg, g.kernel_h, g.kernel_w});
  const auto target = merged.view({g.groups / gp, gp, og, gp, cg, g.kernel_h, g.kernel_w});
  for (int64_t j = 0; j < gp; ++j) target.select(1, j).select(2, j).copy_(blocks.select(1, j));
  return merged;
}

}  // namespace

bool bf16_nhwc_forward_applies(const Conv2dGeometry& g) {
  // Depthwise and channel-multiplier layers (one input channel per group) go elsewhere.
  const Conv2dGeometry m = merged_geometry(g, merged_groups(g));
  return bf16::dot_available() && g.in_channels_per_group() > 1 &&
         m.out_channels_per_group() >= 8;
}

void bf16_nhwc_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       at::Tensor& output, const Conv2dGeometry& g, const Conv2dParams& p) {
  // The block-diagonal weight is built only to be packed: a cached packing skips it.
  const int64_t gp = merged_groups(g);
  const auto weight_to_pack = [&] {
    return gp == 1 ? weight : block_diagonal_weight(weight, g, gp);
  };
  forward_impl(input, weight_to_pack, bias, output, merged_geometry(g, gp), p);
}

bool bf16_nhwc_grad_input_applies(const Conv2dGeometry& g) {
  // As for the forward: merging one-channel groups (depthwise) would multiply the work by the
  // group count merged.
  const Conv2dGeometry m = merged_geometry(g, merged_groups(g));
  return bf16::dot_available() && g.in_channels_per_group() > 1 &&
         m.out_channels_per_group() > 1 && m.in_channels_per_group() >= 8;
}

void bf16_nhwc_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                          at::Tensor& grad_input, const Conv2dGeometry& g,
                          const Conv2dParams& p) {
  const int64_t gp = merged_groups(g);
  if (gp == 1) return grad_input_impl(grad_output, weight, grad_input, g, p);
  grad_input_impl(grad_output, block_diagonal_weight(weight, g, gp), grad_input,
                  merged_geometry(g, gp), p);
}

bool bf16_nhwc_grad_weight_applies(const Conv2dGeometry& g) {
  return bf16_nhwc_forward_applies(g) &&
         merged_geometry(g, merged_groups(g)).col_rows() >= 16;
}

void bf16_nhwc_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                           at::Tensor& grad_weight, const Conv2dGeometry& g,
                           const Conv2dParams& p) {
  const int64_t gp = merged_groups(g);
  if (gp == 1) return grad_weight_impl(grad_output, input, grad_weight, g, p);
  // The merged gradient's diagonal blocks are the groups' gradients (each a sum over the
  // same pixels in the same order); the rest is discarded.
  const int64_t og = g.out_channels_per_group(), cg = g.in_channels_per_group();
  at::Tensor merged = at::empty({g.out_channels, gp * cg, g.kernel_h, g.kernel_w},
                                grad_weight.options());
  grad_weight_impl(grad_output, input, merged, merged_geometry(g, gp), p);
  const auto source = merged.view({g.groups / gp, gp, og, gp, cg, g.kernel_h, g.kernel_w});
  const auto blocks = grad_weight.view({g.groups / gp, gp, og, cg, g.kernel_h, g.kernel_w});
  for (int64_t j = 0; j < gp; ++j) blocks.select(1, j).copy_(source.select(1, j).select(2, j));
}

}  // namespace cnnext::cpu
