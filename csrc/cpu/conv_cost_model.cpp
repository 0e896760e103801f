#include "conv_cost_model.h"

#include <algorithm>
#include <cmath>

#include "conv2d_workspace.h"
#include "conv_cost_coefficients.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "grouped_conv2d_nhwc.h"
#include "im2col_nhwc.h"

namespace cnnext::cpu {
namespace {

// Rows and columns of the active ISA's register-blocked micro-kernel (14x32 on AVX-512, 6x16
// on AVX2 for float32): a GEMM with fewer rows or columns still pays for a whole tile.
struct Tile {
  double rows, cols;
};
Tile micro_tile(at::ScalarType dtype) {
  const Isa isa = active_isa();
  if (dtype == at::kDouble) {
    const auto& ks = gemm_kernels<double>(isa);
    return {double(ks.mr), double(ks.nr)};
  }
  const auto& ks = gemm_kernels<float>(isa);
  return {double(ks.mr), double(ks.nr)};
}

double round_up(double x, double m) { return x <= 0 ? 0 : ((int64_t)((x + m - 1) / m)) * m; }

// Row pitch of the implicit GEMM's wide output: padded columns read, per stride phase.
double wide_cols(int64_t out_w, int64_t kernel_w, int64_t stride, int64_t dilation) {
  const int64_t padded = (out_w - 1) * stride + (kernel_w - 1) * dilation + 1;
  return double((padded + stride - 1) / stride);
}

double padded_extent(int64_t out, int64_t kernel, int64_t stride, int64_t dilation) {
  return double((out - 1) * stride + (kernel - 1) * dilation + 1);
}

// Winograd F(4x4, 3x3) tiles along one axis (per dilation phase).
double winograd_tiles(int64_t out, int64_t d) { return double(d * (((out + d - 1) / d + 3) / 4)); }

}  // namespace

CostFeatures cost_features(ConvAlgoId algo, const ConvProblem& pr, ConvPass pass) {
  const Conv2dGeometry& g = pr.g;
  const Conv2dParams& p = pr.p;
  const double elem = pr.dtype == at::kDouble ? 8.0 : 4.0;
  const double N = g.batch, G = g.groups, Cg = g.out_channels_per_group(), Kr = g.col_rows();
  const double P = g.out_plane();
  const double in = N * g.in_channels * g.in_plane(), out = N * g.out_channels * P;
  const double weights = double(g.out_channels) * Kr;
  const double true_macs = N * G * Cg * P * Kr;
  CostFeatures f{1.0, 1.0, true_macs, elem * (in + out + weights)};
  const Tile tile = micro_tile(pr.dtype);
  const double kSliverRows = tile.rows, kSliverCols = tile.cols;
  switch (algo) {
    case ConvAlgoId::DepthwiseNhwc:  // the same work in the other layout
    case ConvAlgoId::Depthwise: {
      const double padded = N * g.in_channels *
                            padded_extent(g.out_h, g.kernel_h, p.stride[0], p.dilation[0]) *
                            padded_extent(g.out_w, g.kernel_w, p.stride[1], p.dilation[1]);
      f.bytes += elem * padded;
      break;
    }
    case ConvAlgoId::Pointwise:
    case ConvAlgoId::Im2col: {
      const double columns = algo == ConvAlgoId::Pointwise ? 0.0 : 2.0 * N * G * Kr * P;
      f.bytes += elem * columns;
      if (pass == ConvPass::GradInput)
        f.macs = N * G * round_up(Kr, kSliverRows) * round_up(P, kSliverCols) * Cg;
      else if (pass == ConvPass::Forward)
        f.macs = N * G * round_up(Cg, kSliverRows) * round_up(P, kSliverCols) * Kr;
      else
        f.macs = N * G * round_up(Cg, kSliverRows) * round_up(Kr, kSliverCols) * P;
      if (pass == ConvPass::GradWeight) f.bytes += elem * weights * pr.threads;
      f.tasks = N * G;
      break;
    }
    case ConvAlgoId::Implicit: {
      if (pass == ConvPass::GradInput) {  // the transposed stride-1 problem over grad_output
        const double qw = wide_cols(g.in_w, g.kernel_w, 1, p.dilation[1]);
        const double rows_t = double(g.out_channels) * g.kernel_h * g.kernel_w;
        f.macs = N * round_up(g.in_channels, kSliverRows) *
                 round_up(g.in_h * qw, kSliverCols) * rows_t;
        f.bytes += elem * N * g.out_channels * (g.in_h + (g.kernel_h - 1) * p.dilation[0]) * qw;
      } else {
        const double qw = wide_cols(g.out_w, g.kernel_w, p.stride[1], p.dilation[1]);
        const double rows = padded_extent(g.out_h, g.kernel_h, p.stride[0], p.dilation[0]);
        const double sliver_rows = pass == ConvPass::Forward ? round_up(Cg, kSliverRows) : Cg;
        f.macs = N * G * sliver_rows * round_up(g.out_h * qw, kSliverCols) * Kr;
        f.bytes += elem * N * g.in_channels * rows * qw * p.stride[1];
        if (pass == ConvPass::GradWeight) f.bytes += elem * weights * pr.threads;
      }
      f.tasks = N * G;
      break;
    }
    case ConvAlgoId::Winograd: {
      const bool gi = pass == ConvPass::GradInput;
      const int64_t oh = gi ? g.in_h : g.out_h, ow = gi ? g.in_w : g.out_w;
      const double cin = gi ? g.out_channels : g.in_channels;
      const double cout = gi ? g.in_channels : g.out_channels;
      const double tiles =
          N * winograd_tiles(oh, p.dilation[0]) * winograd_tiles(ow, p.dilation[1]);
      f.macs = tiles * 36.0 * round_up(cout, kSliverRows) * cin;
      f.bytes += elem * (2.0 * tiles * 36.0 * (cin + cout) + 2.0 * 36.0 * cin * cout);
      break;
    }
    case ConvAlgoId::Matmul:
      // One GEMM over the batch (rows are images; few rows take the GEMM's small-M path,
      // which pads no rows): its columns are the output channels.
      f.macs = G * N * round_up(Cg, kSliverCols) * Kr;
      f.tasks = G;
      break;
    case ConvAlgoId::PointwiseNhwc: {
      // conv_algo_pointwise_nhwc.cpp: one GEMM per group (and per gathered chunk) over the
      // pixels of the whole batch. Rows are pixels (never padded in practice); columns are the
      // output channels (forward), the input channels (grad_input), or for grad_weight a
      // Cout x Cin block summed over pixels, one range of pixels per thread.
      const double pixels = N * P;
      const double elem_in = elem * pixels * g.in_channels;  // the strided pixels' rows
      const bool strided = !((p.stride[0] == 1 || g.in_h == 1) && (p.stride[1] == 1 || g.in_w == 1));
      // Pixel tasks as the row cuts them; each packs the group's weight for its GEMM.
      double chunks = double(pointwise_nhwc_task_count(pr));
      if (pass != ConvPass::GradWeight) f.bytes += elem * weights * chunks;
      if (pass == ConvPass::Forward) {
        f.macs = G * pixels * round_up(Cg, kSliverCols) * Kr;
        if (strided) f.bytes += 2.0 * elem_in;  // gather written, then read by the GEMM
      } else if (pass == ConvPass::GradInput) {
        f.macs = G * pixels * round_up(Kr, kSliverCols) * Cg;
        // chunk written by the GEMM, read by the scatter; off-grid rows zeroed
        if (strided) f.bytes += 2.0 * elem_in + elem * (in - pixels * g.in_channels);
      } else {
        const double parts = std::max(1.0, std::min<double>(pr.threads, std::floor(pixels / 64)));
        f.macs = G * round_up(Cg, kSliverRows) * round_up(Kr, kSliverCols) * pixels;
        if (strided) f.bytes += 2.0 * elem_in;
        f.bytes += elem * weights * parts;  // partial sums zeroed and added
        if (!strided) chunks = parts;  // one GEMM per range; gathered ranges go by chunks
      }
      f.tasks = G * chunks;
      break;
    }
    case ConvAlgoId::Im2colNhwc: {
      // Pixel-row chunks of NHWC columns (each tap a run of a group's channels) times the
      // repacked weight; grad_input gathers grad_output per stride phase the same way. Groups
      // narrower than 32 channels run b at a time with a block-diagonal weight (b times the
      // multiply-adds, b times fewer GEMMs). A GEMM's columns (output channels forward, input
      // channels grad_input) round up to a micro-tile unless they take the dot path (<= 16).
      const int64_t width = std::max(g.in_channels_per_group(), g.out_channels_per_group());
      int64_t b = 1;
      for (int64_t k = 2; k <= g.groups && k * width <= 32; ++k)
        if (g.groups % k == 0) b = k;
      const double Gb = double(g.groups / b), Cb = double(b * g.in_channels_per_group());
      const double Ob = double(b * g.out_channels_per_group());
      const double taps = double(g.kernel_h * g.kernel_w), Kb = taps * Cb;
      // The dot path costs about a 16-column tile per row whatever its width (fit on the
      // AVX-512 census: grouped 3x3 with 8 channels per group ran 2x its true-MAC estimate).
      // A gathered run (one tap of one pixel) costs about a cache line beyond its bytes:
      // groups of few channels gather many short runs.
      constexpr double kRunBytes = 64.0;
      const auto columns = [&](double c) { return c <= 16 ? 16.0 : round_up(c, kSliverCols); };
      const bool in_place = is_pointwise(g, p);
      if (pass == ConvPass::GradInput) {
        const double in_pixels = N * g.in_plane();
        f.macs = Gb * in_pixels * columns(Cb) * Ob * taps /
                 double(p.stride[0] * p.stride[1]);
        if (!in_place) f.bytes += (elem * 2.0 * Ob + kRunBytes) * Gb * in_pixels * taps /
                                  double(p.stride[0] * p.stride[1]);
      } else {
        const double pixels = N * P;
        if (pass == ConvPass::Forward)
          f.macs = Gb * pixels * columns(Ob) * Kb;
        else
          f.macs = Gb * round_up(Ob, kSliverRows) * round_up(Kb, kSliverCols) * pixels;
        if (!in_place) f.bytes += elem * 2.0 * Gb * pixels * Kb + kRunBytes * Gb * pixels * taps;
      }
      if (pass == ConvPass::GradWeight) f.bytes += elem * weights * b * pr.threads;
      // GEMM calls: chunks of pixel rows per group (and per stride phase for grad_input).
      const int64_t e = static_cast<int64_t>(elem);
      if (pass == ConvPass::GradInput) {
        const int64_t phases = p.stride[0] * p.stride[1];
        const int64_t phase_taps = std::max<int64_t>(1, g.kernel_h * g.kernel_w / phases);
        const int64_t row_len =
            in_place ? 0 : std::max<int64_t>(phase_taps * int64_t(Ob), int64_t(Cb));
        f.tasks = Gb * double(phases) *
                  double(im2col_nhwc_chunk_count(
                      std::max<int64_t>(1, g.batch * g.in_plane() / phases), row_len, e,
                      pr.threads));
      } else {
        f.tasks = Gb * double(im2col_nhwc_chunk_count(g.batch * g.out_plane(),
                                                      in_place ? 0 : int64_t(Kb), e, pr.threads));
      }
      break;
    }
    case ConvAlgoId::GroupedNhwc: {
      // grouped_conv2d_nhwc.h: one permute beside each vector multiply-add, and one input
      // vector load per output pixel, tap and channel vector. grad_input is the forward of the
      // transposed problem over the input's pixels at stride 1; otherwise a gather in which
      // each input pixel meets about 1 / (stride_h * stride_w) of the taps.
      const bool gi = pass == ConvPass::GradInput;
      const double pixels = N * (gi ? g.in_plane() : P);
      const double reach = gi && !grouped_grad_input_is_transposed_forward(g, p)
                               ? 1.0 / double(p.stride[0] * p.stride[1])
                               : 1.0;
      f.macs = pixels * g.out_channels * Kr * reach;
      f.bytes += elem * pixels * g.in_channels * g.kernel_h * g.kernel_w * reach;
      f.tasks = N * (gi ? g.in_h : g.out_h);
      break;
    }
    case ConvAlgoId::Count:
      break;
  }
  // float64 fills half the lanes of a float32 vector.
  if (pr.dtype == at::kDouble) f.macs *= 2.0;
  // The coefficients are fitted per machine: a kernel's speed depends on the ISA it runs.
  return f;
}

double layout_copy_seconds(double bytes) {
  const double* c = kLayoutCopyCoefficients[static_cast<int>(active_isa())];
  return c[0] + c[1] * bytes;
}

double estimate_seconds(ConvAlgoId algo, const ConvProblem& pr, ConvPass pass) {
  const CostFeatures f = cost_features(algo, pr, pass);
  // Fitted per ISA: a kernel's speed depends on the micro-kernels it runs.
  const double* c = kConvCostCoefficients[static_cast<int>(active_isa())][static_cast<int>(algo)]
                                         [static_cast<int>(pass)];
  return c[0] * f.calls + c[1] * f.tasks + c[2] * f.macs + c[3] * f.bytes;
}

}  // namespace cnnext::cpu
