// CPU conv2d: im2col + our GEMM over a bounded, reused column workspace, or a direct kernel
// where a GEMM would be the wrong shape (one input channel per output channel: depthwise).
//
// Work is cut into tasks: a slice of output rows of one image when one image's columns exceed
// the per-thread budget, else one image, or several small images side by side in one wider
// GEMM. Tasks run in parallel when there are enough of them to feed every thread (each thread
// with its own cached workspace and a serial GEMM); otherwise they run in order and the GEMM
// and im2col parallelise inside. A task's arithmetic does not depend on which thread runs it.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>

#include "../common/conv_shapes.h"
#include "conv2d_workspace.h"
#include "depthwise_conv2d.h"
#include "gemm/gemm.h"
#include "im2col.h"
#include "implicit_conv2d.h"
#include "winograd_conv2d.h"

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

// 1x1, stride 1, no padding: the image itself is the column matrix.
bool is_pointwise(const Conv2dGeometry& g, const Conv2dParams& p) {
  return g.kernel_h == 1 && g.kernel_w == 1 && p.stride[0] == 1 && p.stride[1] == 1 &&
         p.padding[0] == 0 && p.padding[1] == 0;
}

bool use_direct(const Conv2dGeometry& g) {
  const ConvAlgo algo = conv_algo_override();
  return algo != ConvAlgo::Im2col && depthwise_applies(g, algo == ConvAlgo::Direct);
}

// Winograd F(4x4, 3x3): float32 only (its rounding error is sized for float32 tolerances).
bool use_winograd(const Conv2dGeometry& g, const Conv2dParams& p) {
  if (!winograd_applies(g, p)) return false;
  const ConvAlgo algo = conv_algo_override();
  return algo == ConvAlgo::Winograd || (algo == ConvAlgo::Auto && winograd_preferred(g, p));
}

// Forward on Winograd when it applies; false when the caller must run another path.
bool winograd_forward(const Conv2dGeometry& g, const Conv2dParams& p, const float* in,
                      const float* w, const float* b, float* out) {
  if (!use_winograd(g, p)) return false;
  const WinogradProblem wp{g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels,
                           g.out_h, g.out_w, p.padding[0], p.padding[1], p.dilation[0],
                           p.dilation[1], false};
  winograd_conv2d_3x3(wp, in, w, b, out);
  return true;
}
bool winograd_forward(const Conv2dGeometry&, const Conv2dParams&, const double*, const double*,
                      const double*, double*) {
  return false;
}

// grad_input of a 3x3 stride-1 layer is a 3x3 stride-1 convolution of grad_output with the
// flipped, transposed kernel, the same dilation d and padding 2 d - p: Winograd applies to it
// as well (unless p > 2 d, a negative padding).
bool winograd_grad_input(const Conv2dGeometry& g, const Conv2dParams& p, const float* go,
                         const float* w, float* gi) {
  const int64_t pad_h = 2 * p.dilation[0] - p.padding[0], pad_w = 2 * p.dilation[1] - p.padding[1];
  if (!use_winograd(g, p) || pad_h < 0 || pad_w < 0) return false;
  const WinogradProblem wp{g.batch, g.out_channels, g.out_h, g.out_w, g.in_channels,
                           g.in_h, g.in_w, pad_h, pad_w, p.dilation[0], p.dilation[1], true};
  winograd_conv2d_3x3(wp, go, w, nullptr, gi);
  return true;
}
bool winograd_grad_input(const Conv2dGeometry&, const Conv2dParams&, const double*,
                         const double*, double*) {
  return false;
}

// Implicit GEMM (no im2col matrix) where implicit_conv2d_preferred measured it ahead, or forced.
bool use_implicit(const Conv2dGeometry& g, const Conv2dParams& p) {
  const ConvAlgo algo = conv_algo_override();
  if (algo == ConvAlgo::Implicit) return implicit_conv2d_applies(g, p);
  return algo == ConvAlgo::Auto && implicit_conv2d_preferred(g, p);
}
bool use_implicit_grad_weight(const Conv2dGeometry& g, const Conv2dParams& p) {
  const ConvAlgo algo = conv_algo_override();
  if (algo == ConvAlgo::Implicit) return implicit_conv2d_applies(g, p);
  return algo == ConvAlgo::Auto && implicit_conv2d_grad_weight_preferred(g, p);
}

// grad_input of a stride-1 convolution is a forward convolution of grad_output with the
// kernel flipped and its channel axes swapped, padding d (k - 1) - p: on the implicit GEMM when
// that transposed problem is one it is preferred for (false: the caller runs col2im). Below 4
// input channels its GEMM is too thin (CIFAR's RGB 3x3: 4.0 ms vs 3.8 ms fwd+bwd on col2im);
// LeNet C2 (6 input channels) gains 9%.
template <typename T>
bool implicit_grad_input(const Conv2dGeometry& g, const Conv2dParams& p,
                         const at::Tensor& weight, const T* go, T* gi) {
  const bool forced = conv_algo_override() == ConvAlgo::Implicit;
  if (p.stride[0] != 1 || p.stride[1] != 1 || g.groups != 1) return false;
  if (g.in_channels < 4 && !forced) return false;
  const Conv2dParams tp{{1, 1},
                        {p.dilation[0] * (g.kernel_h - 1) - p.padding[0],
                         p.dilation[1] * (g.kernel_w - 1) - p.padding[1]},
                        p.dilation, 1};
  if (tp.padding[0] < 0 || tp.padding[1] < 0) return false;
  Conv2dGeometry tg = g;
  tg.in_channels = g.out_channels, tg.in_h = g.out_h, tg.in_w = g.out_w;
  tg.out_channels = g.in_channels, tg.out_h = g.in_h, tg.out_w = g.in_w;
  if (!use_implicit(tg, tp)) return false;
  const at::Tensor flipped = weight.flip({2, 3}).transpose(0, 1).contiguous();
  implicit_conv2d_forward(go, flipped.data_ptr<T>(), static_cast<const T*>(nullptr), gi, tg, tp);
  return true;
}

void check_cpu_dtype(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "cnnext.conv2d: expected a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "cnnext.conv2d: input dtype ", t.scalar_type(),
              " is not supported on CPU (float32 and float64 are)");
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

Plan make_plan(const Conv2dGeometry& g, const Conv2dParams& p, int64_t elem_size) {
  Plan pl;
  pl.g = g;
  pl.cs = col_shape(g, p);
  pl.pointwise = is_pointwise(g, p);
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

// Runs task(t) for t in [0, tasks): in parallel (serial work inside each task) when every
// thread gets a task, else in order with the parallelism inside each task.
template <typename F>
void run_tasks(int64_t tasks, int64_t threads, const F& task) {
  if (threads > 1 && tasks >= threads) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) task(t);
    });
  } else {
    for (int64_t t = 0; t < tasks; ++t) task(t);
  }
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

// The fused ReLU (convert(fuse=True)): x < 0 ? 0 : x keeps NaN, as torch.relu does; one
// contiguous pass the compiler vectorises.
void relu_in_place(at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(output.scalar_type(), "cnnext_conv2d_relu", [&] {
    scalar_t* out = output.data_ptr<scalar_t>();
    const int64_t n = output.numel();
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = out[i] < scalar_t(0) ? scalar_t(0) : out[i];
    });
  });
}

at::Tensor conv2d_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                      const c10::optional<at::Tensor>& bias_, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                      bool relu) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, bias_, p);
  check_cpu_dtype(input_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (output.numel() == 0) return output;
  if (g.col_rows() == 0) {  // no input channels: the output is the bias alone
    output.zero_();
    if (has_bias) output.add_(bias.view({-1, 1, 1}));
    if (relu) relu_in_place(output);
    return output;
  }

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_conv2d_cpu", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    const scalar_t* b = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    if (use_direct(g)) {
      depthwise_conv2d_forward(in, w, b, out, g, p);
      return;
    }
    if (winograd_forward(g, p, in, w, b, out)) return;
    if (use_implicit(g, p)) {
      implicit_conv2d_forward(in, w, b, out, g, p);
      return;
    }
    const Plan pl = make_plan(g, p, sizeof(scalar_t));
    run_tasks(pl.tasks(), pl.threads,
              [&](int64_t t) { forward_task(pl, task_range(pl, t), in, w, b, out); });
  });
  if (relu) relu_in_place(output);
  return output;
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

// grad_bias[oc] = sum over images (in order) of each image's plane sum.
template <typename T>
void grad_bias_sum(const T* go, const Conv2dGeometry& g, T* gb) {
  const int64_t P = g.out_plane();
  at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      T acc = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const T* row = go + (n * g.out_channels + oc) * P;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < P; ++i) s += row[i];
        acc += s;
      }
      gb[oc] = acc;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_conv2d_params(stride, padding, dilation, groups);
  const Conv2dGeometry g = check_conv2d(input_, weight_, c10::nullopt, p);
  check_cpu_dtype(input_);
  check_conv2d_grad_output(grad_output_, input_, g);
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  // Unselected results are empty (0-element) tensors: custom ops return defined tensors.
  at::Tensor grad_input = at::empty({0}, input_.options());
  at::Tensor grad_weight = at::empty({0}, weight_.options());
  at::Tensor grad_bias = at::empty({0}, weight_.options());
  if (output_mask[0]) grad_input = at::empty(input_.sizes(), input_.options());
  if (output_mask[1]) grad_weight = at::zeros(weight_.sizes(), weight_.options());
  if (output_mask[2]) grad_bias = at::empty({g.out_channels}, weight_.options());
  // grad_weight needs the input's columns; only then is the input made contiguous.
  const at::Tensor input = output_mask[1] ? input_.contiguous() : at::Tensor();
  const bool empty_sum = g.col_rows() == 0 || g.out_channels == 0 || g.out_plane() == 0;

  AT_DISPATCH_FLOATING_TYPES(input_.scalar_type(), "cnnext_conv2d_backward_cpu", [&] {
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    const bool want_gi = output_mask[0] && grad_input.numel() > 0;
    const bool want_gw = output_mask[1] && grad_weight.numel() > 0 && g.batch > 0 && !empty_sum;
    if (want_gi && empty_sum) {
      grad_input.zero_();
    } else if (use_direct(g) && (want_gi || want_gw)) {
      depthwise_conv2d_backward(go, want_gw ? input.data_ptr<scalar_t>() : nullptr, w,
                                want_gi ? grad_input.data_ptr<scalar_t>() : nullptr,
                                want_gw ? grad_weight.data_ptr<scalar_t>() : nullptr, g, p);
    } else if (want_gi || want_gw) {
      const Plan pl = make_plan(g, p, sizeof(scalar_t));
      if (want_gi && !winograd_grad_input(g, p, go, w, grad_input.data_ptr<scalar_t>()) &&
          !implicit_grad_input(g, p, weight, go, grad_input.data_ptr<scalar_t>())) {
        scalar_t* gi = grad_input.data_ptr<scalar_t>();
        const int64_t per_task = pl.images;  // grad_input tasks own whole images
        const int64_t tasks = (g.batch + per_task - 1) / per_task;
        run_tasks(tasks, pl.threads, [&](int64_t t) {
          const int64_t n0 = t * per_task;
          grad_input_task(pl, n0, std::min(per_task, g.batch - n0), go, w, gi);
        });
      }
      if (want_gw) {
        const scalar_t* in = input.data_ptr<scalar_t>();
        scalar_t* gw = grad_weight.data_ptr<scalar_t>();
        // Images [n0, n1) into acc, on the implicit GEMM's buffers or im2col + GEMM.
        const bool implicit = use_implicit_grad_weight(g, p);
        const auto accumulate = [&](int64_t n0, int64_t n1, scalar_t* acc) {
          if (implicit)
            implicit_conv2d_grad_weight(go, in, n0, n1, acc, g, p);
          else
            grad_weight_range(pl, n0, n1, go, in, acc);
        };
        // Contiguous image ranges, one partial sum each, reduced in range order: the result
        // depends on the thread count only, never on scheduling.
        const int64_t parts = pl.threads > 1 ? std::min(pl.threads, g.batch) : 1;
        if (parts == 1) {
          accumulate(0, g.batch, gw);
        } else {
          const int64_t wsize = grad_weight.numel();
          scalar_t* partials =
              thread_workspace_as<scalar_t>(WorkspaceSlot::Partials, (parts - 1) * wsize);
          at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
            for (int64_t q = begin; q < end; ++q) {
              scalar_t* acc = q == 0 ? gw : partials + (q - 1) * wsize;
              if (q > 0) std::fill(acc, acc + wsize, scalar_t(0));
              accumulate(g.batch * q / parts, g.batch * (q + 1) / parts, acc);
            }
          });
          at::parallel_for(0, wsize, 4096, [&](int64_t begin, int64_t end) {
            for (int64_t q = 1; q < parts; ++q) {
              const scalar_t* src = partials + (q - 1) * wsize;
              for (int64_t i = begin; i < end; ++i) gw[i] += src[i];
            }
          });
        }
      }
    }

    if (output_mask[2]) grad_bias_sum(go, g, grad_bias.data_ptr<scalar_t>());
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("conv2d", &conv2d_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace cnnext::cpu
