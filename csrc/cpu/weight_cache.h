#pragma once
// Inference-time cache of conv weights in a kernel's packed form (Winograd-transformed taps,
// micro-kernel slivers, OHWI runs), as oneDNN caches its weight reorders: otherwise every call
// repacks, which for a batch-1 call of a late layer costs as much as the convolution itself.
//
// An entry is keyed on the weight tensor (its TensorImpl) and the packing kind, and keeps a
// copy of the weight's bytes: it is used while the tensor is alive and its bytes are equal
// (compared in full on every use: writes through .data, as gradcheck and hand-written updates
// make, move no version counter, so the version alone would serve stale packings). Comparing
// reads the weight twice, far less than Winograd's transform or a strided repack costs.
// It is consulted where grad mode is off in the kernel: torch.no_grad, inference_mode, and also
// the forward of a training step (autograd runs custom-op forwards with grad mode off, so the
// kernel cannot tell the two apart); there the weight changed since the last step, the
// comparison stops at its first bytes, and the entry's buffers are refilled in place, so
// training pays one extra copy of the weight per call. Entries of dead tensors are dropped at
// every insertion; the total is bounded (CNNEXT_WEIGHT_CACHE_BYTES, default 64 MiB; 0 turns
// the cache off) by admission: what does not fit is packed per call.
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace cnnext::cpu {

// Names the weight whose packings the kernels below it may cache, for one forward pass on the
// calling thread (conv2d.cpp sets it; kernels look it up from the same thread): the caller's
// tensor (identity) and its values as the kernels read them (contiguous).
class WeightCacheScope {
 public:
  WeightCacheScope(const at::Tensor& weight, const at::Tensor& values);
  ~WeightCacheScope();
  WeightCacheScope(const WeightCacheScope&) = delete;
  WeightCacheScope& operator=(const WeightCacheScope&) = delete;

 private:
  const at::Tensor* previous_weight_;
  const at::Tensor* previous_values_;
};

// The packing of the scope's weight named by `kind` (a hash of the packing and everything it
// depends on: algorithm, dtype, ISA, tile sizes, layout), `bytes` long, made by pack(dst) on a
// miss. An undefined tensor when no cache applies (no scope, gradients recorded, cache off, or
// larger than the bound): the caller then packs into its own workspace. The returned tensor
// keeps the bytes alive while the caller uses them, even if the entry is evicted meanwhile.
at::Tensor cached_packed_weight(uint64_t kind, size_t bytes,
                                const std::function<void(void*)>& pack);

// The packings that use the cache (the first part of a kind key).
// (The implicit GEMM's slivers are a plain copy, no dearer than the comparison: not cached.)
// kOihwCopy: a channels_last weight copied to OIHW (conv2d.cpp), before any packing;
// kFloatOihwCopy: a bfloat16 / float16 weight converted to float32 OIHW (conv2d.cpp).
enum WeightPacking : int64_t {
  kWinogradTaps = 2, kIm2colNhwcRuns = 3, kBf16DotPanels = 4, kOihwCopy = 5, kFloatOihwCopy = 6
};

// A kind key from its parts (FNV-1a).
uint64_t weight_pack_kind(std::initializer_list<int64_t> parts);
uint64_t weight_pack_kind_of(const std::vector<int64_t>& parts);

// For tests and introspection: entries, bytes held, hits and misses since the last clear.
struct WeightCacheStats {
  int64_t entries, bytes, hits, misses;
};
WeightCacheStats weight_cache_stats();
void clear_weight_cache();

}  // namespace cnnext::cpu
