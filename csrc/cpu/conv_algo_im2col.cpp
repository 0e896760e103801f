// im2col + our GEMM over a bounded, reused column workspace; and the pointwise row (1x1,
// stride 1, no padding), where the image itself is the column matrix and no im2col is written.
//
// Work is cut into tasks: a slice of output rows of one image when one image's columns exceed
// the per-thread budget, else one image, or several small images side by side in one wider
// GEMM. Tasks run in parallel when there are enough of them to feed every thread (each thread
// with its own cached workspace and a serial GEMM); otherwise they run in order and the GEMM
// and im2col parallelise inside. A task's arithmetic does not depend on which thread runs it.
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
#include "im2col.h"

namespace cnnext::cpu {
namespace {

// Planes below this many pixels are batched several images per GEMM: a per-image GEMM would
// be too narrow to amortise its packing and parallel start-up. The batch's columns and staged
// outputs stay within kBatchBytes so they are still in L2 when the GEMM packs them.
constexpr int64_t kSmallPlane = 2048;
constexpr int64_t kBatchBytes = int64_t(512) << 10;
// Narrow planes (late ResNet stages: 7x7 = 49 pixels) would repack the whole weight matrix for
// a GEMM only 49 columns wide; batch enough images for this many columns, within the budget.
constexpr int64_t kMinColumns = 192;

ColShape col_shape(const Conv2dGeometry& g, const Conv2dParams& p) {
  return ColShape{g.in_channels, g.in_h, g.in_w, g.kernel_h, g.kernel_w,
                  p.padding[0], p.padding[1], p.stride[0], p.stride[1],
                  p.dilation[0], p.dilation[1], g.out_h, g.out_w};
}


// How the im2col path cuts the batch into tasks.
struct Plan {
  Conv2dGeometry g;
  ColShape cs;
  bool pointwise;
  int64_t rows, P, cout_g, cin_g;
  int64_t chunk_oy;  // output rows per task when a task is one image (or part of one)
  int64_t chunks;    // tasks per image
  int64_t images;    // images per task (> 1 only for small planes that fit the budget)
  int64_t threads;

  int64_t tasks() const { return images > 1 ? (g.batch + images - 1) / images : g.batch * chunks; }
  // Columns one task needs at most (one group at a time).
  int64_t max_cols() const { return images > 1 ? images * P : chunk_oy * g.out_w; }
};

// in_place: a pointwise geometry reads the image as its column matrix (the pointwise row);
// otherwise even a 1x1 layer is copied into columns, which lets small planes batch images.
Plan make_plan(const Conv2dGeometry& g, const Conv2dParams& p, int64_t elem_size, bool in_place) {
  Plan pl;
  pl.g = g;
  pl.cs = col_shape(g, p);
  pl.pointwise = in_place && is_pointwise(g, p);
  pl.rows = g.col_rows();
  pl.P = g.out_plane();
  pl.cout_g = g.out_channels_per_group();
  pl.cin_g = g.in_channels_per_group();
  pl.threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  pl.chunk_oy = g.out_h;
  pl.chunks = 1;
  pl.images = 1;
  if (pl.pointwise) return pl;
  const int64_t budget = std::max<int64_t>(1, conv_workspace_budget_bytes() / elem_size);
  // At least one output row per chunk, whatever the budget.
  pl.chunk_oy = std::clamp<int64_t>(budget / std::max<int64_t>(1, pl.rows * g.out_w), 1, g.out_h);
  pl.chunks = (g.out_h + pl.chunk_oy - 1) / pl.chunk_oy;
  if (pl.chunks == 1 && pl.P < kSmallPlane && g.batch > 1) {
    const int64_t per_image = (pl.rows + pl.cout_g) * pl.P;  // columns + staged outputs
    const int64_t l2_fit = std::min(budget, kBatchBytes / elem_size) / per_image;
    const int64_t wide_fit = std::min(budget / per_image, (kMinColumns + pl.P - 1) / pl.P);
    const int64_t fit = std::max(l2_fit, wide_fit);
    const int64_t spread = (g.batch + pl.threads - 1) / pl.threads;  // keep every thread busy
    const int64_t images = std::clamp<int64_t>(std::min(fit, spread), 1, g.batch);
    // Same number of tasks for every thread: spread the batch evenly over whole rounds.
    const int64_t tasks = (g.batch + images - 1) / images;
    const int64_t rounds = (tasks + pl.threads - 1) / pl.threads;
    pl.images = std::clamp<int64_t>((g.batch + rounds * pl.threads - 1) / (rounds * pl.threads),
                                    1, images);
  }
  return pl;
}

// The images and output rows of task t.
struct TaskRange {
  int64_t n0, nb, oy0, oy1;
};

TaskRange task_range(const Plan& pl, int64_t t) {
  if (pl.images > 1) {
    const int64_t n0 = t * pl.images;
    return {n0, std::min(pl.images, pl.g.batch - n0), 0, pl.g.out_h};
  }
  const int64_t oy0 = (t % pl.chunks) * pl.chunk_oy;
  return {t / pl.chunks, 1, oy0, std::min(pl.g.out_h, oy0 + pl.chunk_oy)};
}

template <typename T>
void forward_task(const Plan& pl, const TaskRange& r, const T* in, const T* w, const T* b,
                  T* out) {
  const Conv2dGeometry& g = pl.g;
  const int64_t P = pl.P, OW = g.out_w;
  const int64_t ncols = pl.images > 1 ? r.nb * P : (r.oy1 - r.oy0) * OW;
  T* col = pl.pointwise ? nullptr : thread_workspace_as<T>(WorkspaceSlot::Columns, pl.rows * ncols);
  if (r.nb == 1 && pl.images == 1) {
    const int64_t n = r.n0;
    const T* image = in + n * g.in_channels * g.in_plane();
    T* out_n = out + n * g.out_channels * P;
    T beta = 0;
    if (b != nullptr) {  // bias pre-filled, then the GEMM accumulates onto it
      for (int64_t oc = 0; oc < g.out_channels; ++oc)
        std::fill(out_n + oc * P + r.oy0 * OW, out_n + oc * P + r.oy1 * OW, b[oc]);
      beta = 1;
    }
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const T* cols;
      int64_t ldb;
      if (pl.pointwise) {
        cols = image + gi * pl.cin_g * g.in_plane();
        ldb = P;
      } else {
        im2col(image, pl.cs, ColSlice{gi * pl.cin_g, (gi + 1) * pl.cin_g, r.oy0, r.oy1, ncols}, col);
        cols = col;
        ldb = ncols;
      }
      gemm<T>(false, false, pl.cout_g, ncols, pl.rows, T(1), w + gi * pl.cout_g * pl.rows, pl.rows,
              cols, ldb, beta, out_n + gi * pl.cout_g * P + r.oy0 * OW, P);
    }
    return;
  }
  // Several whole images: one GEMM over their columns side by side, then scatter + bias.
  T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, pl.cout_g * ncols);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const ColSlice slice{gi * pl.cin_g, (gi + 1) * pl.cin_g, 0, g.out_h, ncols};
    for (int64_t i = 0; i < r.nb; ++i)
      im2col(in + (r.n0 + i) * g.in_channels * g.in_plane(), pl.cs, slice, col + i * P);
    gemm<T>(false, false, pl.cout_g, ncols, pl.rows, T(1), w + gi * pl.cout_g * pl.rows, pl.rows,
            col, ncols, T(0), stage, ncols);
    for (int64_t i = 0; i < r.nb; ++i) {
      for (int64_t oc = 0; oc < pl.cout_g; ++oc) {
        const int64_t c = gi * pl.cout_g + oc;
        const T* src = stage + oc * ncols + i * P;
        T* dst = out + ((r.n0 + i) * g.out_channels + c) * P;
        const T bias = b != nullptr ? b[c] : T(0);
        for (int64_t j = 0; j < P; ++j) dst[j] = src[j] + bias;
      }
    }
  }
}

// grad_input of the images of task t (whole images: col2im accumulates across row chunks).
template <typename T>
void grad_input_task(const Plan& pl, int64_t n0, int64_t nb, const T* go, const T* w, T* gi) {
  const Conv2dGeometry& g = pl.g;
  const int64_t P = pl.P, OW = g.out_w, in_size = g.in_channels * g.in_plane();
  if (pl.pointwise) {
    for (int64_t n = n0; n < n0 + nb; ++n)
      for (int64_t k = 0; k < g.groups; ++k)
        gemm<T>(true, false, pl.cin_g, P, pl.cout_g, T(1), w + k * pl.cout_g * pl.rows, pl.rows,
                go + (n * g.out_channels + k * pl.cout_g) * P, P, T(0),
                gi + n * in_size + k * pl.cin_g * P, P);
    return;
  }
  std::fill(gi + n0 * in_size, gi + (n0 + nb) * in_size, T(0));
  if (pl.images == 1) {
    T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, pl.rows * pl.chunk_oy * OW);
    for (int64_t k = 0; k < g.groups; ++k) {
      for (int64_t oy0 = 0; oy0 < g.out_h; oy0 += pl.chunk_oy) {
        const int64_t oy1 = std::min(g.out_h, oy0 + pl.chunk_oy), ncols = (oy1 - oy0) * OW;
        gemm<T>(true, false, pl.rows, ncols, pl.cout_g, T(1), w + k * pl.cout_g * pl.rows,
                pl.rows, go + (n0 * g.out_channels + k * pl.cout_g) * P + oy0 * OW, P, T(0), col,
                ncols);
        col2im_add(col, pl.cs, ColSlice{k * pl.cin_g, (k + 1) * pl.cin_g, oy0, oy1, ncols},
                   gi + n0 * in_size);
      }
    }
    return;
  }
  const int64_t ncols = nb * P;
  T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, pl.rows * ncols);
  T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, pl.cout_g * ncols);
  for (int64_t k = 0; k < g.groups; ++k) {
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t oc = 0; oc < pl.cout_g; ++oc)
        std::memcpy(stage + oc * ncols + i * P,
                    go + ((n0 + i) * g.out_channels + k * pl.cout_g + oc) * P, sizeof(T) * P);
    gemm<T>(true, false, pl.rows, ncols, pl.cout_g, T(1), w + k * pl.cout_g * pl.rows, pl.rows,
            stage, ncols, T(0), col, ncols);
    for (int64_t i = 0; i < nb; ++i)
      col2im_add(col + i * P, pl.cs, ColSlice{k * pl.cin_g, (k + 1) * pl.cin_g, 0, g.out_h, ncols},
                 gi + (n0 + i) * in_size);
  }
}

// acc (grad_weight layout) += the contribution of images [n_begin, n_end), in image order.
template <typename T>
void grad_weight_range(const Plan& pl, int64_t n_begin, int64_t n_end, const T* go, const T* in,
                       T* acc) {
  const Conv2dGeometry& g = pl.g;
  const int64_t P = pl.P, OW = g.out_w, in_size = g.in_channels * g.in_plane();
  const int64_t step = pl.images;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += step) {
    const int64_t nb = std::min(step, n_end - n0);
    for (int64_t k = 0; k < g.groups; ++k) {
      T* acc_k = acc + k * pl.cout_g * pl.rows;
      if (pl.pointwise) {
        gemm<T>(false, true, pl.cout_g, pl.rows, P, T(1),
                go + (n0 * g.out_channels + k * pl.cout_g) * P, P,
                in + n0 * in_size + k * pl.cin_g * P, P, T(1), acc_k, pl.rows);
        continue;
      }
      const ColSlice group{k * pl.cin_g, (k + 1) * pl.cin_g, 0, 0, 0};
      if (pl.images == 1) {
        T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, pl.rows * pl.chunk_oy * OW);
        for (int64_t oy0 = 0; oy0 < g.out_h; oy0 += pl.chunk_oy) {
          const int64_t oy1 = std::min(g.out_h, oy0 + pl.chunk_oy), ncols = (oy1 - oy0) * OW;
          im2col(in + n0 * in_size, pl.cs, ColSlice{group.c0, group.c1, oy0, oy1, ncols}, col);
          gemm<T>(false, true, pl.cout_g, pl.rows, ncols, T(1),
                  go + (n0 * g.out_channels + k * pl.cout_g) * P + oy0 * OW, P, col, ncols, T(1),
                  acc_k, pl.rows);
        }
        continue;
      }
      const int64_t ncols = nb * P;
      T* col = thread_workspace_as<T>(WorkspaceSlot::Columns, pl.rows * ncols);
      T* stage = thread_workspace_as<T>(WorkspaceSlot::Staging, pl.cout_g * ncols);
      for (int64_t i = 0; i < nb; ++i) {
        im2col(in + (n0 + i) * in_size, pl.cs, ColSlice{group.c0, group.c1, 0, g.out_h, ncols},
               col + i * P);
        for (int64_t oc = 0; oc < pl.cout_g; ++oc)
          std::memcpy(stage + oc * ncols + i * P,
                      go + ((n0 + i) * g.out_channels + k * pl.cout_g + oc) * P, sizeof(T) * P);
      }
      gemm<T>(false, true, pl.cout_g, pl.rows, ncols, T(1), stage, ncols, col, ncols, T(1), acc_k,
              pl.rows);
    }
  }
}


template <typename T>
void run_im2col(const ConvProblem& pr, ConvPass pass, ConvTensors& t, bool in_place) {
  const Conv2dGeometry& g = pr.g;
  const Plan pl = make_plan(g, pr.p, sizeof(T), in_place);
  switch (pass) {
    case ConvPass::Forward: {
      const T* in = t.input.data_ptr<T>();
      const T* w = t.weight.data_ptr<T>();
      const T* b = t.bias.defined() ? t.bias.data_ptr<T>() : nullptr;
      T* out = t.output.data_ptr<T>();
      run_conv_tasks(pl.tasks(), pl.threads,
                [&](int64_t k) { forward_task(pl, task_range(pl, k), in, w, b, out); });
      return;
    }
    case ConvPass::GradInput: {
      const T* go = t.grad_output.data_ptr<T>();
      const T* w = t.weight.data_ptr<T>();
      T* gi = t.grad_input.data_ptr<T>();
      const int64_t per_task = pl.images;  // grad_input tasks own whole images
      const int64_t tasks = (g.batch + per_task - 1) / per_task;
      run_conv_tasks(tasks, pl.threads, [&](int64_t k) {
        const int64_t n0 = k * per_task;
        grad_input_task(pl, n0, std::min(per_task, g.batch - n0), go, w, gi);
      });
      return;
    }
    case ConvPass::GradWeight: {
      const T* go = t.grad_output.data_ptr<T>();
      const T* in = t.input.data_ptr<T>();
      sum_grad_weight_over_images(
          g.batch, pl.threads, t.grad_weight.data_ptr<T>(), t.grad_weight.numel(),
          [&](int64_t n0, int64_t n1, T* acc) { grad_weight_range(pl, n0, n1, go, in, acc); });
      return;
    }
  }
}

void run_columns(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_im2col",
                             [&] { run_im2col<scalar_t>(pr, pass, t, false); });
}
void run_pointwise(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  AT_DISPATCH_FLOATING_TYPES(pr.dtype, "cnnext_conv2d_pointwise",
                             [&] { run_im2col<scalar_t>(pr, pass, t, true); });
}

bool im2col_applies(const ConvProblem& pr, ConvPass) {
  return !pr.channels_last && (pr.dtype == at::kFloat || pr.dtype == at::kDouble);
}
bool pointwise_applies(const ConvProblem& pr, ConvPass pass) {
  return im2col_applies(pr, pass) && is_pointwise(pr.g, pr.p);
}
double pointwise_cost(const ConvProblem& pr, ConvPass pass);

// On a 1x1 map both rows run one GEMM per image with a single column, where the matmul row
// runs one GEMM over the batch: never cheaper than it (the fitted estimates said otherwise for
// grad_weight, measured 5-6x slower on the AVX-512 fit).
double one_by_one_map_bound(const ConvProblem& pr, ConvPass pass, double own) {
  if (!kMatmulAlgorithm.applies(pr, pass)) return own;
  return std::max(own, kMatmulAlgorithm.cost(pr, pass));
}

double im2col_cost(const ConvProblem& pr, ConvPass pass) {
  const double own = estimate_seconds(ConvAlgoId::Im2col, pr, pass);
  // On a pointwise layer that batches no images (make_plan), im2col runs the pointwise row's
  // GEMMs after copying the image into columns: never cheaper. The fitted estimates of the
  // two rows come from different shape mixes and can say otherwise (measured on the AVX-512
  // fit: 1x1 200->80 at 14^2, batch 1, picked im2col at 3x the pointwise row's time).
  if (is_pointwise(pr.g, pr.p) && (pr.g.batch == 1 || pr.g.out_plane() >= kSmallPlane))
    return std::max(own, one_by_one_map_bound(pr, pass, pointwise_cost(pr, pass)));
  return one_by_one_map_bound(pr, pass, own);
}
double pointwise_cost(const ConvProblem& pr, ConvPass pass) {
  return one_by_one_map_bound(pr, pass, estimate_seconds(ConvAlgoId::Pointwise, pr, pass));
}

}  // namespace

// The same task machinery runs both rows; the pointwise row reads the image in place.
const ConvAlgorithm kIm2colAlgorithm{"im2col", im2col_applies, im2col_cost, run_columns};
const ConvAlgorithm kPointwiseAlgorithm{"pointwise", pointwise_applies, pointwise_cost,
                                        run_pointwise};

}  // namespace cnnext::cpu
