#pragma once
// Generic CPU pooling loops, shared by max / avg / adaptive pooling. A pooling op supplies the
// window of every output row and column (PoolRange, from csrc/common/pool_shapes.h).
//
// Layout: an NCHW tensor is pooled as N*C "images" of one channel (planar loops, scalar per
// output); a channels_last tensor as N images of C channels, the innermost loop running over
// the contiguous channels (vectorised by the compiler). No copy to NCHW is made.
//
// Parallelism: forward over output rows (image, oh), so few planes still use every thread.
// Backward scatters grad_output into grad_input; each (image, channel) plane is owned by one
// task and scattered in a fixed order, so results are bit-identical whatever the threads.
#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "../common/pool_shapes.h"

namespace cnnext::cpu {

struct PoolLayout {
  int64_t images, channels, in_h, in_w, out_h, out_w;
  int64_t in_plane() const { return in_h * in_w; }
  int64_t out_plane() const { return out_h * out_w; }
};

inline bool wants_channels_last(const at::Tensor& self) {
  return self.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

inline PoolLayout pool_layout(const Pool2dGeometry& g, bool channels_last) {
  return channels_last
             ? PoolLayout{g.batch, g.channels, g.in_h, g.in_w, g.out_h, g.out_w}
             : PoolLayout{g.batch * g.channels, 1, g.in_h, g.in_w, g.out_h, g.out_w};
}

template <typename RangeFn>
std::vector<PoolRange> ranges(int64_t count, const RangeFn& fn) {
  std::vector<PoolRange> r(static_cast<size_t>(count));
  for (int64_t o = 0; o < count; ++o) r[o] = fn(o);
  return r;
}

// Runs body(image, oh) for every output row, in parallel; grain sized so a task has some
// thousands of element reads.
template <typename Body>
void for_each_output_row(const PoolLayout& L, int64_t window_area, const Body& body) {
  const int64_t per_row = std::max<int64_t>(1, L.out_w * L.channels * window_area);
  const int64_t grain = std::max<int64_t>(1, 16384 / per_row);
  at::parallel_for(0, L.images * L.out_h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / L.out_h, r % L.out_h);
  });
}

// Runs body(image, c0, c1) over disjoint (image, channel-block) tasks that cover every plane
// once. Channels are split only when images alone cannot feed the threads.
template <typename Body>
void for_each_plane_block(const PoolLayout& L, const Body& body) {
  const int64_t threads = at::get_num_threads();
  int64_t blocks = 1;
  if (L.channels > 1 && L.images < threads) {
    blocks = std::min<int64_t>(L.channels / 16 + 1, (threads + L.images - 1) / L.images);
  }
  const int64_t block = (L.channels + blocks - 1) / blocks;
  at::parallel_for(0, L.images * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = (t % blocks) * block;
      const int64_t c1 = std::min(L.channels, c0 + block);
      if (c0 < c1) body(t / blocks, c0, c1);
    }
  });
}

template <typename T>
constexpr T lowest_value() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}

// ---- max: value and flat index of the first maximum; NaN wins and propagates ---------------
// Update rule (torch's): take v when v > max or v is NaN. An all -inf window keeps its first
// element's index.
template <typename T>
void max_pool_forward(const T* __restrict in, T* __restrict out, int64_t* __restrict ind,
                      const PoolLayout& L, const std::vector<PoolRange>& rows,
                      const std::vector<PoolRange>& cols, int64_t window_area) {
  const int64_t C = L.channels, W = L.in_w;
  for_each_output_row(L, window_area, [&](int64_t img, int64_t oh) {
    const PoolRange rh = rows[oh];
    const T* src = in + img * L.in_plane() * C;
    const int64_t o_base = (img * L.out_h + oh) * L.out_w;
    for (int64_t ow = 0; ow < L.out_w; ++ow) {
      const PoolRange rw = cols[ow];
      const int64_t first = rh.begin * W + rw.begin;
      if (C == 1) {
        T best = lowest_value<T>();
        int64_t best_i = first;
        for (int64_t ih = rh.begin; ih < rh.end; ih += rh.step) {
          for (int64_t iw = rw.begin; iw < rw.end; iw += rw.step) {
            const int64_t i = ih * W + iw;
            const T v = src[i];
            if (v > best || at::_isnan(v)) {
              best = v;
              best_i = i;
            }
          }
        }
        out[o_base + ow] = best;
        ind[o_base + ow] = best_i;
      } else {
        T* __restrict o = out + (o_base + ow) * C;
        int64_t* __restrict id = ind + (o_base + ow) * C;
        std::fill(o, o + C, lowest_value<T>());
        std::fill(id, id + C, first);
        for (int64_t ih = rh.begin; ih < rh.end; ih += rh.step) {
          for (int64_t iw = rw.begin; iw < rw.end; iw += rw.step) {
            const int64_t i = ih * W + iw;
            const T* __restrict x = src + i * C;
            for (int64_t c = 0; c < C; ++c) {  // branch-free so it vectorises
              const bool take = x[c] > o[c] || at::_isnan(x[c]);
              o[c] = take ? x[c] : o[c];
              id[c] = take ? i : id[c];
            }
          }
        }
      }
    }
  });
}

// grad_input[index] += grad_output, plane by plane. Returns false if an index lies outside
// its plane (such entries are skipped, never written out of bounds).
template <typename T>
bool max_pool_backward(const T* __restrict grad_out, const int64_t* __restrict ind,
                       T* __restrict grad_in, const PoolLayout& L) {
  std::atomic<bool> ok{true};
  const int64_t C = L.channels, in_plane = L.in_plane(), out_plane = L.out_plane();
  for_each_plane_block(L, [&](int64_t img, int64_t c0, int64_t c1) {
    const T* go = grad_out + img * out_plane * C;
    const int64_t* id = ind + img * out_plane * C;
    T* gi = grad_in + img * in_plane * C;
    bool plane_ok = true;
    for (int64_t o = 0; o < out_plane; ++o) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t i = id[o * C + c];
        if (i >= 0 && i < in_plane) {
          gi[i * C + c] += go[o * C + c];
        } else {
          plane_ok = false;
        }
      }
    }
    if (!plane_ok) ok = false;
  });
  return ok;
}

// ---- average: sum of the window's elements / divisor(rh, rw); an empty window gives 0 ------
template <typename T, typename DivisorFn>
void avg_pool_forward(const T* __restrict in, T* __restrict out, const PoolLayout& L,
                      const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                      int64_t window_area, const DivisorFn& divisor) {
  const int64_t C = L.channels, W = L.in_w;
  for_each_output_row(L, window_area, [&](int64_t img, int64_t oh) {
    const PoolRange rh = rows[oh];
    const T* src = in + img * L.in_plane() * C;
    const int64_t o_base = (img * L.out_h + oh) * L.out_w;
    for (int64_t ow = 0; ow < L.out_w; ++ow) {
      const PoolRange rw = cols[ow];
      T* __restrict o = out + (o_base + ow) * C;
      if (rh.begin >= rh.end || rw.begin >= rw.end) {
        std::fill(o, o + C, T(0));
        continue;
      }
      const T div = static_cast<T>(divisor(rh, rw));
      if (C == 1) {
        T sum = 0;
        for (int64_t ih = rh.begin; ih < rh.end; ++ih) {
          const T* x = src + ih * W;
          for (int64_t iw = rw.begin; iw < rw.end; ++iw) sum += x[iw];
        }
        o[0] = sum / div;
      } else {
        std::fill(o, o + C, T(0));
        for (int64_t ih = rh.begin; ih < rh.end; ++ih) {
          for (int64_t iw = rw.begin; iw < rw.end; ++iw) {
            const T* __restrict x = src + (ih * W + iw) * C;
            for (int64_t c = 0; c < C; ++c) o[c] += x[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) o[c] = o[c] / div;
      }
    }
  });
}

// grad_input (zero-filled) += grad_output / divisor over every input of each window.
template <typename T, typename ShareFn>
void avg_pool_backward(const T* __restrict grad_out, T* __restrict grad_in, const PoolLayout& L,
                       const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                       const ShareFn& share) {
  const int64_t C = L.channels, W = L.in_w, in_plane = L.in_plane(), out_plane = L.out_plane();
  for_each_plane_block(L, [&](int64_t img, int64_t c0, int64_t c1) {
    const T* go = grad_out + img * out_plane * C;
    T* gi = grad_in + img * in_plane * C;
    for (int64_t oh = 0; oh < L.out_h; ++oh) {
      const PoolRange rh = rows[oh];
      for (int64_t ow = 0; ow < L.out_w; ++ow) {
        const PoolRange rw = cols[ow];
        if (rh.begin >= rh.end || rw.begin >= rw.end) continue;
        const T* __restrict g = go + (oh * L.out_w + ow) * C;
        for (int64_t ih = rh.begin; ih < rh.end; ++ih) {
          for (int64_t iw = rw.begin; iw < rw.end; ++iw) {
            T* __restrict x = gi + (ih * W + iw) * C;
            for (int64_t c = c0; c < c1; ++c) x[c] += share(g[c], rh, rw);
          }
        }
      }
    }
  });
}

}  // namespace cnnext::cpu
