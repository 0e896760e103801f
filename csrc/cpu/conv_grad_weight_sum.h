#pragma once
// grad_weight as a sum over the batch, split into contiguous image ranges, one partial sum per
// thread, added in range order: the result depends on the thread count only, never on
// scheduling. Shared by the GEMM-shaped algorithms.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "conv2d_workspace.h"

namespace cnnext::cpu {

// accumulate(n0, n1, acc) adds the grad_weight of images [n0, n1) into acc (which starts at
// zero). gw (wsize elements) receives the total.
template <typename T, typename F>
void sum_grad_weight_over_images(int64_t batch, int64_t threads, T* gw, int64_t wsize,
                                 const F& accumulate) {
  std::fill(gw, gw + wsize, T(0));
  const int64_t parts = threads > 1 ? std::min(threads, batch) : 1;
  if (parts <= 1) {
    accumulate(0, batch, gw);
    return;
  }
  T* partials = thread_workspace_as<T>(WorkspaceSlot::Partials, (parts - 1) * wsize);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      T* acc = q == 0 ? gw : partials + (q - 1) * wsize;
      if (q > 0) std::fill(acc, acc + wsize, T(0));
      accumulate(batch * q / parts, batch * (q + 1) / parts, acc);
    }
  });
  at::parallel_for(0, wsize, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t q = 1; q < parts; ++q) {
      const T* src = partials + (q - 1) * wsize;
      for (int64_t i = begin; i < end; ++i) gw[i] += src[i];
    }
  });
}

}  // namespace cnnext::cpu
