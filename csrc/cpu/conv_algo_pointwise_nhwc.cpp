// The pointwise_nhwc row: a 1x1 convolution (padding 0, any stride) on channels_last tensors,
// computed as they lie. In NHWC memory the activations are a [pixels x channels] matrix, so
// each pass is a GEMM per group over the pixels of the whole batch (forward and grad_input cut
// into L2-sized runs of pixels), with no layout copies:
//   forward      out[pix, O]  = in[pix, Cg] * W[O, Cg]^T      (+ bias pre-filled, beta = 1)
//   grad_input   gin[pix, Cg] = gout[pix, O] * W[O, Cg]
//   grad_weight  gw[O, Cg]    = gout[pix, O]^T * in[pix, Cg]  (summed over pixels)
// A group is a slice of each pixel's channels: the leading dimension stays the total channels.
//
// Strided layers first gather the strided pixels' channel runs into a chunk of the per-thread
// column workspace (bounded by conv_workspace_budget_bytes()); grad_input GEMMs into a chunk,
// scatters its rows to the strided positions and zeroes only the rows no output pixel reaches.
//
// grad_weight's GEMM is tiny (O x Cg) with a huge K (pixels): its own C split would leave both
// threads reading every pixel, so instead the pixels are cut into one contiguous range per
// thread, each summed into its own partial, the partials added in range order
// (conv_grad_weight_sum.h): deterministic for a given thread count; expanding layers sum the
// transposed product (grad_weight_transposed). Forward and grad_input are
// independent of the thread count (the GEMM's promise; gathers and scatters are copies).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "conv2d_workspace.h"
#include "conv_algorithms.h"
#include "conv_cost_model.h"
#include "conv_grad_weight_sum.h"
#include "conv_tasks.h"
#include "gemm/gemm.h"

namespace cnnext::cpu {
namespace {

// A thread's grad_weight range must hold at least this many pixels and multiply-adds to pay
// for its partial sum; smaller problems run one GEMM that splits C between the threads.
constexpr int64_t kMinPixelsPerPart = 64;
constexpr int64_t kMinMacsPerPart = int64_t(1) << 20;
// Gathers and scatters hand out at least this many bytes of rows per task.
constexpr int64_t kCopyGrainBytes = int64_t(64) << 10;

bool applies(const ConvProblem& pr, ConvPass) {
  const Conv2dGeometry& g = pr.g;
  return pr.channels_last && (pr.dtype == at::kFloat || pr.dtype == at::kDouble) &&
         g.kernel_h == 1 && g.kernel_w == 1 && pr.p.padding[0] == 0 && pr.p.padding[1] == 0;
}

double cost(const ConvProblem& pr, ConvPass pass) {
  return estimate_seconds(ConvAlgoId::PointwiseNhwc, pr, pass);
}

// The geometry as the NHWC GEMMs see it. Output pixel p = (n, oy, ox) flattened; its input
// pixel is (n, oy * sh, ox * sw). Input channels C, output channels O, per group cg and og.
struct Layout {
  int64_t H, W, C, OH, OW, O, sh, sw, cg, og, groups, pixels;
  bool strided;

  explicit Layout(const ConvProblem& pr)
      : H(pr.g.in_h), W(pr.g.in_w), C(pr.g.in_channels), OH(pr.g.out_h), OW(pr.g.out_w),
        O(pr.g.out_channels), sh(pr.p.stride[0]), sw(pr.p.stride[1]),
        cg(pr.g.in_channels_per_group()), og(pr.g.out_channels_per_group()),
        groups(pr.g.groups), pixels(pr.g.batch * pr.g.out_plane()),
        // One output pixel per input pixel in the same order: the input is the GEMM's matrix.
        strided(!((sh == 1 || H == 1) && (sw == 1 || W == 1))) {}

  int64_t input_pixel(int64_t p) const {
    const int64_t ox = p % OW, r = p / OW;
    const int64_t oy = r % OH, n = r / OH;
    return (n * H + oy * sh) * W + ox * sw;
  }

  // Output pixels per gathered chunk: the column budget, at least one pixel.
  int64_t chunk_pixels(int64_t elem_size) const {
    return std::max<int64_t>(1, conv_workspace_budget_bytes() / (elem_size * C));
  }
};

int64_t copy_grain(const Layout& l, int64_t elem_size) {
  return std::max<int64_t>(1, kCopyGrainBytes / (elem_size * l.C));
}

// Rows [p0, p0 + rows) of the strided input, each C values, into buf [rows x C].
template <typename T>
void gather_rows(const Layout& l, const T* in, int64_t p0, int64_t rows, T* buf) {
  at::parallel_for(0, rows, copy_grain(l, sizeof(T)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(buf + i * l.C, in + l.input_pixel(p0 + i) * l.C, sizeof(T) * l.C);
  });
}

// The reverse: buf's rows to their strided input pixels of grad_input.
template <typename T>
void scatter_rows(const Layout& l, const T* buf, int64_t p0, int64_t rows, T* gin) {
  at::parallel_for(0, rows, copy_grain(l, sizeof(T)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(gin + l.input_pixel(p0 + i) * l.C, buf + i * l.C, sizeof(T) * l.C);
  });
}

// Zeroes the grad_input rows of input pixels no output pixel reads (off the stride grid).
template <typename T>
void zero_unreached_rows(const Layout& l, int64_t batch, T* gin) {
  const int64_t rows = batch * l.H;  // (n, iy) image rows of W pixels
  at::parallel_for(0, rows, std::max<int64_t>(1, copy_grain(l, sizeof(T)) / l.W),
                   [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* row = gin + r * l.W * l.C;
      if ((r % l.H) % l.sh != 0) {
        std::fill(row, row + l.W * l.C, T(0));
        continue;
      }
      for (int64_t x = 0; x < l.W; ++x)
        if (x % l.sw != 0) std::fill(row + x * l.C, row + (x + 1) * l.C, T(0));
    }
  });
}

// Forward and grad_input run in tasks of consecutive output pixels sized for L2: a task's
// gathered rows, pre-filled bias and GEMM output are still cached when the next step reads them.
// Tasks run in parallel, each with a serial GEMM, when every thread gets some; else in order
// with the GEMM parallel inside. Each output element is one FMA chain over the channels
// whatever the task size, so the result does not depend on either.
constexpr int64_t kTaskBytes = int64_t(256) << 10;
constexpr int64_t kMinTaskPixels = 16;
constexpr int64_t kMinTasks = 8;
// Each task's GEMM packs the whole weight for itself, about one move per weight element against
// `rows` multiply-adds per element: short tasks spent more on packing than on products
// (1024 -> 2048 at 7x7, batch 8: 26-pixel tasks ran 210 GFLOP/s, 256-pixel ones 310-350;
// 192 -> 1152 at 7x7, batch 1: 110 -> 330).
constexpr int64_t kPackAmortisingPixels = 256;

int64_t task_pixels(const Layout& l, int64_t elem_size, int64_t threads) {
  int64_t rows = std::max(kMinTaskPixels, kTaskBytes / (elem_size * (l.C + l.O)));
  rows = std::min(rows, std::max(kMinTaskPixels, (l.pixels + kMinTasks - 1) / kMinTasks));
  rows = std::max(rows, kPackAmortisingPixels);
  if (l.strided) rows = std::min(rows, l.chunk_pixels(elem_size));
  // A weight wider than a task is tall: one GEMM over every pixel, parallel inside, packs each
  // weight panel once for all (1024 -> 2048 at 7x7, batch 8: 330 -> 450 GFLOP/s; 160 -> 960:
  // 340 -> 450), where every task packed all of it again.
  if (!l.strided && std::max(l.cg, l.og) > rows) return l.pixels;
  rows = std::max<int64_t>(1, std::min(rows, l.pixels));
  // Equal tasks, as many as a multiple of the threads: no thread waits on a long last one.
  int64_t tasks = (l.pixels + rows - 1) / rows;
  if (threads > 1 && tasks > 1 && tasks % threads != 0) {
    tasks = (tasks + threads - 1) / threads * threads;
    rows = (l.pixels + tasks - 1) / tasks;
  }
  return rows;
}

}  // namespace

int64_t pointwise_nhwc_task_count(const ConvProblem& pr) {
  const Layout l(pr);
  if (l.pixels <= 0) return 0;
  const int64_t elem = pr.dtype == at::kDouble ? 8 : 4;
  const int64_t rows = task_pixels(l, elem, pr.threads);
  return (l.pixels + rows - 1) / rows;
}

namespace {

template <typename F>
void run_pixel_tasks(const Layout& l, int64_t threads, int64_t rows, const F& task) {
  const int64_t tasks = (l.pixels + rows - 1) / rows;
  run_conv_tasks(tasks, threads,
                 [&](int64_t t) { task(t * rows, std::min(rows, l.pixels - t * rows)); });
}

template <typename T>
void forward(const Layout& l, int64_t threads, const T* in, const T* w, const T* bias, T* out) {
  run_pixel_tasks(l, threads, task_pixels(l, sizeof(T), threads), [&](int64_t p0, int64_t rows) {
    const T* a = in + p0 * l.C;
    if (l.strided) {
      T* buf = thread_workspace_as<T>(WorkspaceSlot::Columns, rows * l.C);
      gather_rows(l, in, p0, rows, buf);
      a = buf;
    }
    T* c = out + p0 * l.O;
    T beta = 0;
    if (bias != nullptr) {  // bias pre-filled, then the GEMMs accumulate onto it
      for (int64_t i = 0; i < rows; ++i) std::memcpy(c + i * l.O, bias, sizeof(T) * l.O);
      beta = 1;
    }
    for (int64_t k = 0; k < l.groups; ++k)
      gemm<T>(false, true, rows, l.og, l.cg, T(1), a + k * l.cg, l.C, w + k * l.og * l.cg, l.cg,
              beta, c + k * l.og, l.O);
  });
}

template <typename T>
void grad_input(const Layout& l, int64_t threads, int64_t batch, const T* gout, const T* w,
                T* gin) {
  if (l.strided) zero_unreached_rows(l, batch, gin);
  run_pixel_tasks(l, threads, task_pixels(l, sizeof(T), threads), [&](int64_t p0, int64_t rows) {
    T* c = l.strided ? thread_workspace_as<T>(WorkspaceSlot::Columns, rows * l.C)
                     : gin + p0 * l.C;
    for (int64_t k = 0; k < l.groups; ++k)
      gemm<T>(false, false, rows, l.cg, l.og, T(1), gout + p0 * l.O + k * l.og, l.O,
              w + k * l.og * l.cg, l.cg, T(0), c + k * l.cg, l.C);
    if (l.strided) scatter_rows(l, c, p0, rows, gin);
  });
}

// The GEMM reads its op(B) in place when op(A) has few rows, packing only op(A): so the
// narrower of a group's channel counts takes the rows. With fewer input than output channels
// (expanding layers) the sums are formed transposed, [cg x og] per group, and turned at the end.
// The turn costs a move per weight element, paid back only over many pixels, and the
// transposed product is no faster once cg passes a few micro-tiles. Measured (AVX-512, 2
// threads, untransposed against transposed): 512 -> 2048 on 1x7x7 0.27 vs 0.82 ms, on 4x7x7
// 0.97 vs 1.6, 256 -> 1024 on 8x14x14 1.8 vs 2.0; but 80 -> 480 and 112 -> 672 on 8x14x14
// 0.36 vs 0.31 and 0.63 vs 0.55 (96 -> 576 and 128 -> 512 even).
bool grad_weight_transposed(const Layout& l) {
  return l.cg < l.og && (l.cg <= 64 || (l.cg <= 128 && l.pixels >= 1024));
}

// Adds the grad_weight of output pixels [p0, p1) into acc: per group [og x cg], or [cg x og]
// when grad_weight_transposed.
template <typename T>
void accumulate_grad_weight(const Layout& l, const T* gout, const T* in, int64_t p0, int64_t p1,
                            T* acc) {
  const bool transposed = grad_weight_transposed(l);
  const int64_t chunk = l.strided ? task_pixels(l, sizeof(T), 1) : p1 - p0;
  T* buf = l.strided ? thread_workspace_as<T>(WorkspaceSlot::Columns,
                                              std::min(chunk, p1 - p0) * l.C)
                     : nullptr;
  for (int64_t q = p0; q < p1; q += chunk) {
    const int64_t rows = std::min(chunk, p1 - q);
    const T* x = in + q * l.C;
    if (l.strided) {
      gather_rows(l, in, q, rows, buf);
      x = buf;
    }
    for (int64_t k = 0; k < l.groups; ++k) {
      const T* dy = gout + q * l.O + k * l.og;
      T* c = acc + k * l.og * l.cg;
      if (transposed)
        gemm<T>(true, false, l.cg, l.og, rows, T(1), x + k * l.cg, l.C, dy, l.O, T(1), c, l.og);
      else
        gemm<T>(true, false, l.og, l.cg, rows, T(1), dy, l.O, x + k * l.cg, l.C, T(1), c, l.cg);
    }
  }
}

template <typename T>
void grad_weight(const Layout& l, int64_t threads, const T* gout, const T* in, T* gw) {
  const int64_t macs = l.pixels * l.O * l.cg, wsize = l.O * l.cg;
  const int64_t parts = std::max<int64_t>(
      1, std::min({threads, l.pixels / kMinPixelsPerPart, macs / kMinMacsPerPart}));
  const bool transposed = grad_weight_transposed(l);
  T* sums = transposed ? thread_workspace_as<T>(WorkspaceSlot::Staging, wsize) : gw;
  // parts == 1 sums every pixel in one GEMM chain per chunk, parallel inside the GEMM.
  sum_grad_weight_over_images<T>(l.pixels, parts, sums, wsize,
                                 [&](int64_t p0, int64_t p1, T* acc) {
                                   accumulate_grad_weight(l, gout, in, p0, p1, acc);
                                 });
  if (!transposed) return;
  // [cg x og] -> [og x cg] in 32 x 32 tiles (a tile's rows and columns stay in L1: the plain
  // loop's strided writes made this copy cost more than the GEMM on 1024 x 2048 weights).
  constexpr int64_t kTile = 32;
  for (int64_t k = 0; k < l.groups; ++k) {
    const T* src = sums + k * l.og * l.cg;
    T* dst = gw + k * l.og * l.cg;
    at::parallel_for(0, (l.cg + kTile - 1) / kTile, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t i0 = b0 * kTile; i0 < std::min(l.cg, b1 * kTile); i0 += kTile) {
        for (int64_t o0 = 0; o0 < l.og; o0 += kTile) {
          const int64_t i1 = std::min(l.cg, i0 + kTile), o1 = std::min(l.og, o0 + kTile);
          for (int64_t o = o0; o < o1; ++o)
            for (int64_t i = i0; i < i1; ++i) dst[o * l.cg + i] = src[i * l.og + o];
        }
      }
    });
  }
}

template <typename T>
void run_typed(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const Layout l(pr);
  if (l.pixels == 0) {  // batch 0: only grad_weight has elements, and they are zero
    if (pass == ConvPass::GradWeight) t.grad_weight.zero_();
    return;
  }
  switch (pass) {
    case ConvPass::Forward:
      forward<T>(l, pr.threads, t.input.data_ptr<T>(), t.weight.data_ptr<T>(),
                 t.bias.defined() ? t.bias.data_ptr<T>() : nullptr, t.output.data_ptr<T>());
      break;
    case ConvPass::GradInput:
      grad_input<T>(l, pr.threads, pr.g.batch, t.grad_output.data_ptr<T>(), t.weight.data_ptr<T>(),
                    t.grad_input.data_ptr<T>());
      break;
    case ConvPass::GradWeight:
      grad_weight<T>(l, pr.threads, t.grad_output.data_ptr<T>(), t.input.data_ptr<T>(),
                     t.grad_weight.data_ptr<T>());
      break;
  }
}

void run(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_pointwise_nhwc",
                             [&] { run_typed<scalar_t>(pr, pass, t); });
}

}  // namespace

const ConvAlgorithm kPointwiseNhwcAlgorithm{"pointwise_nhwc", applies, cost, run};

}  // namespace cnnext::cpu
