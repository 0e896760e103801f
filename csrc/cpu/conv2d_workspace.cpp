#include "conv2d_workspace.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace cnnext::cpu {
namespace {

// 8 MiB: a chunk of columns large enough that the GEMM sees wide panels, small enough that
// two threads' buffers stay far below the input/output sizes of the layers that need chunking.
constexpr int64_t kDefaultBudgetBytes = int64_t(8) << 20;

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

struct ThreadBuffers {
  std::unique_ptr<void, AlignedFree> ptr[static_cast<int>(WorkspaceSlot::Count)];
  size_t capacity[static_cast<int>(WorkspaceSlot::Count)] = {};
};

}  // namespace

void* thread_workspace(WorkspaceSlot slot, size_t bytes) {
  thread_local ThreadBuffers buffers;
  const int i = static_cast<int>(slot);
  if (bytes == 0) bytes = 64;
  if (buffers.capacity[i] < bytes) {
    buffers.ptr[i].reset();
    buffers.capacity[i] = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    TORCH_CHECK(p != nullptr, "cnnext.conv2d: could not allocate a workspace of ", rounded,
                " bytes");
    buffers.ptr[i].reset(p);
    buffers.capacity[i] = rounded;
  }
  return buffers.ptr[i].get();
}

int64_t conv_workspace_budget_bytes() {
  const char* env = std::getenv("CNNEXT_CONV_WORKSPACE_BYTES");
  if (env != nullptr && *env != '\0') {
    const long long v = std::atoll(env);
    if (v > 0) return v;
  }
  return kDefaultBudgetBytes;
}

ConvAlgo conv_algo_override() {
  const char* env = std::getenv("CNNEXT_CONV_ALGO");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return ConvAlgo::Auto;
  if (std::strcmp(env, "im2col") == 0) return ConvAlgo::Im2col;
  if (std::strcmp(env, "direct") == 0) return ConvAlgo::Direct;
  if (std::strcmp(env, "winograd") == 0) return ConvAlgo::Winograd;
  if (std::strcmp(env, "implicit") == 0) return ConvAlgo::Implicit;
  if (std::strcmp(env, "pointwise") == 0) return ConvAlgo::Pointwise;
  if (std::strcmp(env, "matmul") == 0) return ConvAlgo::Matmul;
  if (std::strcmp(env, "grouped") == 0) return ConvAlgo::Grouped;
  TORCH_CHECK(false,
              "cnnext.conv2d: CNNEXT_CONV_ALGO must be auto, im2col, direct, winograd, "
              "implicit, pointwise, matmul or grouped, got '",
              env, "'");
}

}  // namespace cnnext::cpu
