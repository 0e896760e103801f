#pragma once
// Generic CPU pooling loops, shared by max / avg / adaptive pooling. A pooling op supplies the
// window of every output row and column (PoolRange, from csrc/common/pool_shapes.h).
//
// Layout: an NCHW tensor is pooled as N*C "images" of one channel (planar loops; float rows
// with a regular window take an explicit vector path over consecutive outputs); a
// channels_last tensor as N images of C channels, the innermost loop running over the
// contiguous channels (vectorised by the compiler). No copy to NCHW is made.
//
// ISA: the loops (pool2d_kernels.inc) are compiled for AVX-512, AVX2 and plain x86-64; the
// build has no -march flag, and active_isa() (honouring CNNEXT_ISA) picks one per call.
//
// Parallelism: forward over output rows (image, oh), so few planes still use every thread.
// Backward scatters grad_output into grad_input; each (image, block of input rows) is owned by
// one task, which adds only into its own rows, in output order, so results are bit-identical
// whatever the threads.
#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <limits>
#include <memory>
#include <vector>

#include "../common/pool_shapes.h"
#include "gemm/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// Runs body(r0, r1) over ranges of output rows (image * out_h + oh), in parallel; grain sized
// so a task has some thousands of element reads.
template <typename Body>
void for_output_rows(const PoolLayout& L, int64_t window_area, const Body& body) {
  const int64_t per_row = std::max<int64_t>(1, L.out_w * L.channels * window_area);
  const int64_t grain = std::max<int64_t>(1, 16384 / per_row);
  at::parallel_for(0, L.images * L.out_h, grain, body);
}

// The size of the last-level cache cpu0 sees, from sysfs (what lscpu reports). glibc's
// sysconf(_SC_LEVEL3_CACHE_SIZE) decodes CPUID itself and can be off by 10x in a VM (320 MiB
// for this VM's 32 MiB L3), so it is only the fallback; 32 MiB if neither answers.
inline int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    int64_t bytes = std::strtoll(size.c_str(), nullptr, 10);
    const char unit = size.back();
    if (unit == 'K') bytes <<= 10;
    if (unit == 'M') bytes <<= 20;
    if (level >= 2 && bytes > best) best = bytes;
  }
  if (best > 0) return best;
  long size = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  size = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return size > 0 ? static_cast<int64_t>(size) : int64_t(32) << 20;
}

// How a channels_last forward call treats the caches. A call whose input and output together
// exceed half the last-level cache (shared with the other cores: on a 32 MiB L3 the copy
// bandwidth falls between 16 and 32 MiB moved) streams through DRAM: it prefetches the next
// output row's input rows, which the hardware prefetcher does not do for several rows at
// once. Its output (and indices) go around the caches with non-temporal stores only when they
// would not survive until their reader anyway: the call moves more than the whole cache. Below
// that, the next layer (or the backward) finds them in L3, and reading a line for ownership
// costs less than fetching it back from DRAM. CNNEXT_POOL_STREAM=0 / 1 forces both off / on.
struct PoolStreaming {
  bool prefetch = false;
  bool bypass_cache = false;
};
inline PoolStreaming streaming_for(int64_t in_bytes, int64_t out_bytes) {
  const char* env = std::getenv("CNNEXT_POOL_STREAM");
  if (env != nullptr && (env[0] == '0' || env[0] == '1') && env[1] == '\0') {
    return PoolStreaming{env[0] == '1', env[0] == '1'};
  }
  static const int64_t llc = last_level_cache_bytes();
  const int64_t moved = in_bytes + out_bytes;
  return PoolStreaming{moved > llc / 2, moved > llc};
}

// Backward tasks: disjoint (image, block of input rows) pieces covering every grad_input
// element once. Each task owns all channels of its rows, so threads never write the same
// cache lines (splitting channels made neighbouring threads' prefetchers fight over lines);
// rows are split only when images alone cannot feed the threads.
struct RowBlocks {
  int64_t blocks, rows;  // per image: `blocks` blocks of `rows` input rows (the last may be short)
};
inline RowBlocks row_blocks(const PoolLayout& L) {
  const int64_t threads = at::get_num_threads();
  int64_t blocks = 1;
  if (L.images < threads && L.in_h > 1) {
    blocks = std::min<int64_t>(L.in_h, (threads + L.images - 1) / L.images);
  }
  const int64_t rows = (L.in_h + blocks - 1) / blocks;
  return {(L.in_h + rows - 1) / rows, rows};
}

// The outputs [lo, hi) whose window bounds hold one input row (or column); lo == hi: none.
struct CoverRange {
  int64_t lo, hi;
};
inline std::vector<CoverRange> cover_ranges(int64_t in, const PoolRange* windows, int64_t out) {
  std::vector<CoverRange> cover(static_cast<size_t>(in), CoverRange{0, 0});
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t x = std::max<int64_t>(windows[o].begin, 0); x < std::min(windows[o].end, in); ++x) {
      CoverRange& c = cover[x];
      if (c.lo == c.hi) c.lo = o;
      c.hi = o + 1;
    }
  }
  return cover;
}

// max_pool2d's window taps (uint8 positions, pool2d_kernels.inc) decoded once per backward call.
// A tap t names row r = t / kernel_w and column s = t % kernel_w of its output's window, in
// dilation steps from the clipped window's first element; it lies in the window when r and s
// are below the window's element rows / columns. Since the kernel area is at most 255, any
// tap from the area up (the empty-window mark 255 included) fails that test.
struct TapGeometry {
  int64_t kernel_w = 1;
  int16_t row[256], col[256];
  int64_t offset[256];  // r * dilation_h * W + s * dilation_w
  std::vector<int32_t> row_limit, col_limit;  // per output row / column: element rows / columns
  std::vector<int64_t> col_begin;              // per output column: its window's first column
  // Gather form: for each input row, the outputs whose window holds it as (oh, r * kernel_w),
  // items [row_first[ih], row_first[ih + 1]); for each input column (ow, s) likewise.
  struct Item {
    int64_t out;
    int32_t tap;
  };
  std::vector<int64_t> row_first, col_first;
  std::vector<Item> row_items, col_items;

  TapGeometry(int64_t kernel_w_, int64_t in_h, int64_t in_w, const PoolRange* rows, int64_t out_h,
              const PoolRange* cols, int64_t out_w)
      : kernel_w(std::max<int64_t>(kernel_w_, 1)) {
    const int64_t dh = out_h > 0 ? rows[0].step : 1, dw = out_w > 0 ? cols[0].step : 1;
    for (int t = 0; t < 256; ++t) {
      row[t] = static_cast<int16_t>(t / kernel_w);
      col[t] = static_cast<int16_t>(t % kernel_w);
      offset[t] = row[t] * dh * in_w + col[t] * dw;
    }
    auto limits = [](const PoolRange* r, int64_t n, std::vector<int32_t>& out) {
      out.resize(static_cast<size_t>(n));
      for (int64_t o = 0; o < n; ++o) {
        out[o] = r[o].begin < r[o].end
                     ? static_cast<int32_t>((r[o].end - r[o].begin + r[o].step - 1) / r[o].step)
                     : 0;
      }
    };
    limits(rows, out_h, row_limit);
    limits(cols, out_w, col_limit);
    col_begin.resize(static_cast<size_t>(out_w));
    for (int64_t o = 0; o < out_w; ++o) col_begin[o] = cols[o].begin;
    // Counted, then placed: three allocations per axis, where a vector per input row or column
    // cost a small backward call some 30 mallocs.
    // Outputs are visited in order, so each input's items stay in output order.
    auto items = [](const PoolRange* r, int64_t n, int64_t in, int64_t scale,
                    std::vector<int64_t>& first, std::vector<Item>& list) {
      first.assign(static_cast<size_t>(in + 1), 0);
      for (int64_t o = 0; o < n; ++o) {
        for (int64_t x = r[o].begin; x < r[o].end; x += r[o].step) ++first[x + 1];
      }
      for (int64_t x = 0; x < in; ++x) first[x + 1] += first[x];
      list.resize(static_cast<size_t>(first[in]));
      std::vector<int64_t> next(first.begin(), first.end() - 1);
      for (int64_t o = 0; o < n; ++o) {
        int64_t k = 0;
        for (int64_t x = r[o].begin; x < r[o].end; x += r[o].step, ++k) {
          list[next[x]++] = Item{o, static_cast<int32_t>(k * scale)};
        }
      }
    };
    items(rows, out_h, in_h, kernel_w, row_first, row_items);
    items(cols, out_w, in_w, 1, col_first, col_items);
  }
};

template <typename T>
constexpr T lowest_value() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}

// Regular window geometry along W (max_pool2d / avg_pool2d, not adaptive) and the outputs
// [lo, hi) whose windows lie inside the row: those take the vector path.
struct ColWindow {
  int64_t kernel = 0, stride = 0, pad = 0, dilation = 1;  // kernel 0: not a regular window
};
struct RegularCols {
  int64_t stride = 0, pad = 0, dilation = 1, kernel = 0;  // stride 0: scalar loops only
  int64_t lo = 0, hi = 0;
  ColWindow window;  // the window along W, whether or not the vector path applies
};

inline RegularCols regular_cols(int64_t in_w, int64_t out_w, int64_t kernel, int64_t stride,
                                int64_t pad, int64_t dilation) {
  RegularCols rc;
  rc.window = ColWindow{kernel, stride, pad, dilation};
  // Vector loads gather every stride-th element: strides 1 and 2 only; int32 lane indices.
  if ((stride != 1 && stride != 2) || in_w <= 0 || out_w <= 0) return rc;
  const int64_t lo = (pad + stride - 1) / stride;           // ow * stride - pad >= 0
  const int64_t last = in_w - 1 + pad - (kernel - 1) * dilation;  // ow * stride <= last
  if (last < 0) return rc;
  const int64_t hi = std::min(out_w, last / stride + 1);
  if (hi <= lo) return rc;
  return RegularCols{stride, pad, dilation, kernel, lo, hi, rc.window};
}

// Values-only forward as a separable reduction (pool2d_separable.inc), for dilation 1 windows
// that overlap, where it measured faster than the direct loops (2 threads, Zen 4, float32 and
// bfloat16): NCHW planes whose windows overlap along either axis (3x3 stride 1: 2-4.5x; ResNet's
// 3x3 stride 2 on 112x112: 1.5x; 2x2 stride 2 has nothing to share and ran at 0.4x), and
// channels_last at stride 1 along W with a vector of channels (3x3 stride 1: 1.3-1.9x; at stride
// 2 a column serves two windows, and the extra pass over the columns ran at 0.85-0.98x).
struct SeparablePlan {
  bool use = false;
  int64_t ring_len = 0;   // channels_last: reduced columns kept (the widest window)
  int64_t pad_right = 0;  // NCHW: identity columns past the input (ceil mode)
};

inline SeparablePlan separable_plan(const PoolLayout& L, const std::vector<PoolRange>& rows,
                                    const std::vector<PoolRange>& cols, const ColWindow& w,
                                    Isa isa) {
  SeparablePlan plan;
  if (w.kernel <= 0 || w.dilation != 1 || rows.empty() || cols.empty()) return plan;
  for (const PoolRange& r : rows) {
    if (r.step != 1) return plan;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  const int64_t lanes = isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : 4;
#else
  (void)isa;
  const int64_t lanes = 4;
#endif
  if (L.channels > 1) {
    if (L.channels < lanes || w.stride != 1 || w.kernel < 2 || w.kernel > 8) return plan;
    plan.ring_len = 1;
    while (plan.ring_len < w.kernel) plan.ring_len *= 2;
  } else {
    const bool overlap = w.kernel > w.stride || (rows.size() > 1 && rows[0].end > rows[1].begin);
    if (!overlap) return plan;
    const int64_t window_end = (L.out_w - 1) * w.stride - w.pad + w.kernel;
    plan.pad_right = std::max<int64_t>(0, window_end - L.in_w);
    if (w.pad < 0 || w.pad > w.kernel) return plan;
  }
  plan.use = true;
  return plan;
}

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,prefer-vector-width=512")
namespace pool_avx512 {
#define POOL_LANES 16
#include "pool2d_kernels.inc"
#undef POOL_LANES
}  // namespace pool_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace pool_avx2 {
#define POOL_LANES 8
#include "pool2d_kernels.inc"
#undef POOL_LANES
}  // namespace pool_avx2
#pragma GCC pop_options
#endif

namespace pool_portable {
#define POOL_LANES 4
#include "pool2d_kernels.inc"
#undef POOL_LANES
}  // namespace pool_portable

// True if the separable kernels took this values-only forward (see separable_plan).
template <typename T, bool IsMax, typename DivisorFn>
bool separable_forward(const T* in, T* out, const PoolLayout& L,
                       const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                       int64_t window_area, const ColWindow& w, Isa isa,
                       const DivisorFn& divisor) {
  if constexpr (!std::is_same<T, float>::value && !std::is_same<T, c10::BFloat16>::value &&
                !std::is_same<T, c10::Half>::value) {
    return false;
  } else {
    const SeparablePlan plan = separable_plan(L, rows, cols, w, isa);
    if (!plan.use) return false;
    // Average divisors, once per call (an empty window divides its zero sum by infinity).
    std::vector<float> table;
    if (!IsMax) {
      table.resize(static_cast<size_t>(L.out_h * L.out_w));
      for (int64_t oh = 0; oh < L.out_h; ++oh) {
        for (int64_t ow = 0; ow < L.out_w; ++ow) {
          const bool empty = rows[oh].begin >= rows[oh].end || cols[ow].begin >= cols[ow].end;
          table[oh * L.out_w + ow] = empty ? std::numeric_limits<float>::infinity()
                                           : static_cast<float>(divisor(rows[oh], cols[ow]));
        }
      }
    }
    const float* divisors = table.data();
    for_output_rows(L, window_area, [&](int64_t r0, int64_t r1) {
      (void)isa;
      if (L.channels > 1) {
#if defined(__x86_64__) && defined(__GNUC__)
        switch (isa) {
          case Isa::Avx512: return pool_avx512::separable_cl_rows<T, IsMax>(in, out, L, rows.data(), cols.data(), plan.ring_len, divisors, r0, r1);
          case Isa::Avx2: return pool_avx2::separable_cl_rows<T, IsMax>(in, out, L, rows.data(), cols.data(), plan.ring_len, divisors, r0, r1);
          default: break;
        }
#endif
        return pool_portable::separable_cl_rows<T, IsMax>(in, out, L, rows.data(), cols.data(), plan.ring_len, divisors, r0, r1);
      }
#if defined(__x86_64__) && defined(__GNUC__)
      switch (isa) {
        case Isa::Avx512: return pool_avx512::separable_nchw_rows<T, IsMax>(in, out, L, rows.data(), w.kernel, w.stride, w.pad, plan.pad_right, divisors, r0, r1);
        case Isa::Avx2: return pool_avx2::separable_nchw_rows<T, IsMax>(in, out, L, rows.data(), w.kernel, w.stride, w.pad, plan.pad_right, divisors, r0, r1);
        default: break;
      }
#endif
      pool_portable::separable_nchw_rows<T, IsMax>(in, out, L, rows.data(), w.kernel, w.stride, w.pad, plan.pad_right, divisors, r0, r1);
    });
    return true;
  }
}

// ---- max: value and position of the first maximum; NaN wins and propagates ----------------
// Update rule (torch's): take v when v > max or v is NaN. An all -inf window keeps its first
// element's position. ind == nullptr: values only (no position is computed or stored).
// Ix: int64_t flat indices, or uint8_t window taps (pool2d_kernels.inc; kernel area <= kMaxTaps).
constexpr int64_t kMaxTaps = 255;

template <typename T, typename Ix = int64_t>
void max_pool_forward(const T* in, T* out, Ix* ind, const PoolLayout& L,
                      const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                      int64_t window_area, RegularCols rc = {}) {
  const Isa isa = active_isa();
  const bool with_index = ind != nullptr;
  if (!with_index && separable_forward<T, true>(in, out, L, rows, cols, window_area, rc.window,
                                                isa, [](const PoolRange&, const PoolRange&) { return 1; })) {
    return;
  }
  if (L.in_plane() >= (int64_t(1) << 31)) {  // int32 lane indices: scalar loops only
    rc = RegularCols{0, 0, 1, 0, 0, 0, rc.window};
  }
  const int64_t out_elems = L.images * L.out_plane() * L.channels;
  const PoolStreaming stream = L.channels == 1 ? PoolStreaming{} :
      streaming_for(static_cast<int64_t>(sizeof(T)) * L.images * L.in_plane() * L.channels,
                    static_cast<int64_t>(sizeof(T) + (with_index ? sizeof(Ix) : 0)) * out_elems);
  for_output_rows(L, window_area, [&](int64_t r0, int64_t r1) {
    auto run = [&](auto with_index_tag) {
      constexpr bool WI = decltype(with_index_tag)::value;
      (void)isa;
#if defined(__x86_64__) && defined(__GNUC__)
      switch (isa) {
        case Isa::Avx512: return pool_avx512::max_forward_rows<WI, T>(in, out, ind, L, rows.data(), cols.data(), rc, r0, r1, stream);
        case Isa::Avx2: return pool_avx2::max_forward_rows<WI, T>(in, out, ind, L, rows.data(), cols.data(), rc, r0, r1, stream);
        default: break;
      }
#endif
      pool_portable::max_forward_rows<WI, T>(in, out, ind, L, rows.data(), cols.data(), rc, r0, r1, stream);
    };
    if (with_index) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

// channels_last max backward in gather form (pool2d_kernels.inc) where a vector of channels
// fits: true if it ran and every index matched inside its window (then it equals the scatter);
// false: nothing is decided, the caller scatters (and reports indices outside the plane).
template <typename T, typename Ix>
bool max_pool_backward_gather(const T* grad_out, const Ix* ind, T* grad_in,
                              const PoolLayout& L, const PoolRange* rows, const PoolRange* cols,
                              const TapGeometry* taps, const RowBlocks& rb, Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  const int64_t lanes = isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : 4;
#else
  const int64_t lanes = 4;
#endif
  if (!std::is_same<T, float>::value && !std::is_same<T, c10::BFloat16>::value &&
      !std::is_same<T, c10::Half>::value) {
    return false;
  }
  if (L.channels < lanes || L.channels >= (int64_t(1) << 31)) return false;
  const auto row_cover = cover_ranges(L.in_h, rows, L.out_h);
  const auto col_cover = cover_ranges(L.in_w, cols, L.out_w);
  int64_t windows = 0;  // outputs with a non-empty window, per image and channel
  for (int64_t oh = 0; oh < L.out_h; ++oh) {
    for (int64_t ow = 0; ow < L.out_w; ++ow) {
      windows += rows[oh].begin < rows[oh].end && cols[ow].begin < cols[ow].end;
    }
  }
  // The streaming rule of the forward, for grad_input (written once per pixel, taps path):
  // a call moving more than the whole cache writes it around the caches (float32 training
  // steps of 8x64x112^2 to 8x64x224^2: 1.04-1.08x forward+backward, 2026-12-02).
  const int64_t out_elems = L.images * L.out_plane() * L.channels;
  const PoolStreaming stream = streaming_for(
      static_cast<int64_t>(sizeof(T) + sizeof(Ix)) * out_elems,
      static_cast<int64_t>(sizeof(T)) * L.images * L.in_plane() * L.channels);
  std::atomic<int64_t> matched{0};
  at::parallel_for(0, L.images * rb.blocks, 1, [&](int64_t t0, int64_t t1) {
    int64_t m = 0;
    (void)isa;
    if constexpr (std::is_same<Ix, uint8_t>::value) {
      auto run = [&](auto stream_tag) {
        constexpr bool S = decltype(stream_tag)::value;
#if defined(__x86_64__) && defined(__GNUC__)
        switch (isa) {
          case Isa::Avx512: return pool_avx512::max_backward_gather_taps<S, T>(grad_out, ind, grad_in, L, *taps, rb, t0, t1);
          case Isa::Avx2: return pool_avx2::max_backward_gather_taps<S, T>(grad_out, ind, grad_in, L, *taps, rb, t0, t1);
          default: break;
        }
#endif
        return pool_portable::max_backward_gather_taps<S, T>(grad_out, ind, grad_in, L, *taps, rb, t0, t1);
      };
      m = stream.bypass_cache ? run(std::true_type{}) : run(std::false_type{});
    } else {
#if defined(__x86_64__) && defined(__GNUC__)
      switch (isa) {
        case Isa::Avx512: m = pool_avx512::max_backward_gather_tasks<T>(grad_out, ind, grad_in, L, row_cover.data(), col_cover.data(), rb, t0, t1); break;
        case Isa::Avx2: m = pool_avx2::max_backward_gather_tasks<T>(grad_out, ind, grad_in, L, row_cover.data(), col_cover.data(), rb, t0, t1); break;
        default: m = pool_portable::max_backward_gather_tasks<T>(grad_out, ind, grad_in, L, row_cover.data(), col_cover.data(), rb, t0, t1); break;
      }
#else
      m = pool_portable::max_backward_gather_tasks<T>(grad_out, ind, grad_in, L, row_cover.data(), col_cover.data(), rb, t0, t1);
#endif
    }
    matched += m;
  });
  return matched.load() == windows * L.images * L.channels;
}

// grad_input[position] += grad_output, plane by plane. Returns false if a position lies outside
// its plane (flat index) or its window (tap); such entries are skipped, never written out of
// bounds, unless the window is empty. rows/cols: every output's window (max_pool2d's or
// adaptive_max_pool2d's); an empty one (dilation with padding, any_empty) contributes nothing.
// kernel_w: the window width taps count in (taps only).
template <typename T, typename Ix>
bool max_pool_backward(const T* grad_out, const Ix* ind, T* grad_in, const PoolLayout& L,
                       const PoolRange* rows, const PoolRange* cols, bool any_empty,
                       int64_t kernel_w = 0) {
  std::atomic<bool> ok{true};
  const RowBlocks rb = row_blocks(L);
  const Isa isa = active_isa();
  std::unique_ptr<TapGeometry> tap_geometry;
  if constexpr (std::is_same<Ix, uint8_t>::value) {
    tap_geometry = std::make_unique<TapGeometry>(kernel_w, L.in_h, L.in_w, rows, L.out_h, cols, L.out_w);
  }
  const TapGeometry* tg = tap_geometry.get();
  if (max_pool_backward_gather(grad_out, ind, grad_in, L, rows, cols, tg, rb, isa)) return true;
  at::parallel_for(0, L.images * rb.blocks, 1, [&](int64_t t0, int64_t t1) {
    auto run = [&]() -> bool {
      (void)isa;
#if defined(__x86_64__) && defined(__GNUC__)
      switch (isa) {
        case Isa::Avx512: return pool_avx512::max_backward_tasks<T>(grad_out, ind, grad_in, L, rows, cols, any_empty, tg, rb, t0, t1);
        case Isa::Avx2: return pool_avx2::max_backward_tasks<T>(grad_out, ind, grad_in, L, rows, cols, any_empty, tg, rb, t0, t1);
        default: break;
      }
#endif
      return pool_portable::max_backward_tasks<T>(grad_out, ind, grad_in, L, rows, cols, any_empty, tg, rb, t0, t1);
    };
    if (!run()) ok = false;
  });
  return ok;
}

// ---- average: sum of the window's elements / divisor(rh, rw); an empty window gives 0 ------
template <typename T, typename DivisorFn>
void avg_pool_forward(const T* in, T* out, const PoolLayout& L,
                      const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                      int64_t window_area, const DivisorFn& divisor, RegularCols rc = {}) {
  const Isa isa = active_isa();
  const bool global = L.channels == 1 && L.out_plane() == 1;  // avg_forward_rows' plane sums
  if (!global && separable_forward<T, false>(in, out, L, rows, cols, window_area, rc.window, isa, divisor)) {
    return;
  }
  const int64_t bytes_per_pixel = static_cast<int64_t>(sizeof(T)) * L.images * L.channels;
  const PoolStreaming stream = L.channels == 1 ? PoolStreaming{} :
      streaming_for(bytes_per_pixel * L.in_plane(), bytes_per_pixel * L.out_plane());
  for_output_rows(L, window_area, [&](int64_t r0, int64_t r1) {
    auto run = [&]() {
      (void)isa;
#if defined(__x86_64__) && defined(__GNUC__)
      switch (isa) {
        case Isa::Avx512: return pool_avx512::avg_forward_rows<T>(in, out, L, rows.data(), cols.data(), rc, divisor, r0, r1, stream);
        case Isa::Avx2: return pool_avx2::avg_forward_rows<T>(in, out, L, rows.data(), cols.data(), rc, divisor, r0, r1, stream);
        default: break;
      }
#endif
      pool_portable::avg_forward_rows<T>(in, out, L, rows.data(), cols.data(), rc, divisor, r0, r1, stream);
    };
    run();
  });
}

// grad_input = sum of grad_output / divisor over every input of each window.
template <typename T, typename ShareFn>
void avg_pool_backward(const T* grad_out, T* grad_in, const PoolLayout& L,
                       const std::vector<PoolRange>& rows, const std::vector<PoolRange>& cols,
                       const ShareFn& share) {
  const RowBlocks rb = row_blocks(L);
  const Isa isa = active_isa();
  // channels_last: gathered per input pixel (write-once) when a pixel's covering output rows
  // fit the share ring; NCHW planes scatter row by row.
  std::vector<CoverRange> row_cover, col_cover;
  int64_t ring_rows = 0;
  if (L.channels > 1) {
    row_cover = cover_ranges(L.in_h, rows.data(), L.out_h);
    col_cover = cover_ranges(L.in_w, cols.data(), L.out_w);
    for (const CoverRange& c : row_cover) ring_rows = std::max(ring_rows, c.hi - c.lo);
    ring_rows = std::max<int64_t>(ring_rows, 1);
    if (ring_rows > 64) row_cover.clear();
  }
  const CoverRange* rc = row_cover.empty() ? nullptr : row_cover.data();
  const CoverRange* cc = col_cover.empty() ? nullptr : col_cover.data();
  at::parallel_for(0, L.images * rb.blocks, 1, [&](int64_t t0, int64_t t1) {
    (void)isa;
#if defined(__x86_64__) && defined(__GNUC__)
    switch (isa) {
      case Isa::Avx512: return pool_avx512::avg_backward_tasks<T>(grad_out, grad_in, L, rows.data(), cols.data(), share, rb, rc, cc, ring_rows, t0, t1);
      case Isa::Avx2: return pool_avx2::avg_backward_tasks<T>(grad_out, grad_in, L, rows.data(), cols.data(), share, rb, rc, cc, ring_rows, t0, t1);
      default: break;
    }
#endif
    pool_portable::avg_backward_tasks<T>(grad_out, grad_in, L, rows.data(), cols.data(), share, rb, rc, cc, ring_rows, t0, t1);
  });
}

}  // namespace cnnext::cpu
