#pragma once
// How the GEMM-shaped conv rows spread independent tasks (image slices, pixel chunks, groups)
// over the threads: in parallel, each task's work serial inside, when every thread gets one;
// otherwise in order, with the GEMM's own parallelism inside each task.
#include <ATen/Parallel.h>

#include <cstdint>

namespace cnnext::cpu {

// Runs task(t) for t in [0, tasks).
template <typename F>
void run_conv_tasks(int64_t tasks, int64_t threads, const F& task) {
  if (threads > 1 && tasks >= threads) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) task(t);
    });
  } else {
    for (int64_t t = 0; t < tasks; ++t) task(t);
  }
}

}  // namespace cnnext::cpu
