#pragma once
// Per-thread scratch buffers for the conv2d kernels, kept between calls: a fresh allocation
// pays a page fault per 4 KiB on first touch, which on these machines costs more than the
// im2col it holds. Each thread reuses its own buffers, so no locking is needed.
#include <cstddef>
#include <cstdint>

namespace cnnext::cpu {

// Distinct buffers a thread may hold at the same time.
enum class WorkspaceSlot : int {
  Columns = 0,      // im2col chunk
  Staging = 1,      // several images' GEMM output / gathered grad_output
  Partials = 2,     // caller's per-thread grad_weight partial sums; Winograd's transposed taps
  Plane = 3,        // direct kernels: padded input plane
  GradPlane = 4,    // direct kernels: padded grad_input plane
  Accum = 5,        // direct kernels: per-tap grad_weight lane sums
  WinogradWeights = 6,  // Winograd: transformed weights (the caller's, shared by all threads)
  PackedWeights = 7,    // implicit GEMM: weights in micro-kernel slivers (the caller's, shared)
  Count = 8,
};

// At least `bytes` bytes, 64-byte aligned, owned by the calling thread. The contents are
// undefined (a previous call's data). Valid until the same thread asks for the same slot again.
void* thread_workspace(WorkspaceSlot slot, size_t bytes);

template <typename T>
T* thread_workspace_as(WorkspaceSlot slot, int64_t elems) {
  return static_cast<T*>(thread_workspace(slot, static_cast<size_t>(elems) * sizeof(T)));
}

// Column workspace budget per thread, in bytes: CNNEXT_CONV_WORKSPACE_BYTES when set (tests
// use a tiny budget to force chunking), else a default sized for this machine's caches.
int64_t conv_workspace_budget_bytes();

// Algorithm override: CNNEXT_CONV_ALGO = "auto" (default: the cost rule, or the measured choice
// in benchmark mode) or the name of a row of the algorithm table (conv_algorithms.h): "im2col",
// "direct", "winograd", "implicit", "pointwise", "matmul". A named row runs every pass it applies to;
// other passes take the cost rule's choice.
enum class ConvAlgo { Auto, Im2col, Direct, Winograd, Implicit, Pointwise, Matmul, Grouped };
ConvAlgo conv_algo_override();

}  // namespace cnnext::cpu
