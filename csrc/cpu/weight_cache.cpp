#include "weight_cache.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

namespace cnnext::cpu {
namespace {

thread_local const at::Tensor* t_scope_weight = nullptr;   // identity: the caller's tensor
thread_local const at::Tensor* t_scope_values = nullptr;   // its values, contiguous

struct Entry {
  c10::weak_intrusive_ptr<c10::TensorImpl> owner;  // dies with the weight tensor
  at::Tensor values;  // the weight's bytes when packed: a hit compares them all
  at::Tensor packed;
  std::list<std::pair<const c10::TensorImpl*, uint64_t>>::iterator lru;  // recency order
};

struct KeyHash {
  size_t operator()(const std::pair<const c10::TensorImpl*, uint64_t>& k) const {
    return std::hash<const void*>()(k.first) ^ (k.second * 0x9e3779b97f4a7c15ull);
  }
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<std::pair<const c10::TensorImpl*, uint64_t>, Entry, KeyHash> entries;
  std::list<std::pair<const c10::TensorImpl*, uint64_t>> lru;  // front: most recent
  int64_t bytes = 0, hits = 0, misses = 0;

  void erase(decltype(entries)::iterator it) {
    bytes -= static_cast<int64_t>(it->second.packed.nbytes() + it->second.values.nbytes());
    lru.erase(it->second.lru);
    entries.erase(it);
  }
};

Cache& cache() {
  static auto* c = new Cache();  // never destroyed: kernels may run during interpreter exit
  return *c;
}

int64_t bound_bytes() {
  static const int64_t bound = [] {
    const char* env = std::getenv("CNNEXT_WEIGHT_CACHE_BYTES");
    if (env != nullptr && *env != '\0') return static_cast<int64_t>(std::atoll(env));
    return int64_t(64) << 20;
  }();
  return bound;
}

}  // namespace

WeightCacheScope::WeightCacheScope(const at::Tensor& weight, const at::Tensor& values)
    : previous_weight_(t_scope_weight), previous_values_(t_scope_values) {
  t_scope_weight = &weight;
  t_scope_values = &values;
}
WeightCacheScope::~WeightCacheScope() {
  t_scope_weight = previous_weight_;
  t_scope_values = previous_values_;
}

uint64_t weight_pack_kind_of(const std::vector<int64_t>& parts) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t v : parts) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
  return h;
}

uint64_t weight_pack_kind(std::initializer_list<int64_t> parts) {
  return weight_pack_kind_of(std::vector<int64_t>(parts));
}

at::Tensor cached_packed_weight(uint64_t kind, size_t bytes,
                                const std::function<void(void*)>& pack) {
  const at::Tensor* weight = t_scope_weight;
  if (weight == nullptr || at::GradMode::is_enabled() || bytes == 0 ||
      static_cast<int64_t>(bytes + t_scope_values->nbytes()) > bound_bytes())
    return at::Tensor();
  const at::Tensor& values = *t_scope_values;
  const c10::TensorImpl* impl = weight->unsafeGetTensorImpl();
  const auto key = std::make_pair(impl, kind);
  const size_t value_bytes = values.nbytes();
  Cache& c = cache();
  at::Tensor reuse_packed, reuse_values;  // a stale entry's buffers, refilled (no new pages)
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.entries.find(key);
    if (it != c.entries.end()) {
      Entry& e = it->second;
      // The same TensorImpl alive (not a new tensor at a reused address) with the same bytes:
      // compared in full, since writes through .data (gradcheck, hand-written updates) move no
      // version counter.
      const bool same_owner = e.owner.lock().get() == impl;
      const bool same_sizes = static_cast<size_t>(e.packed.nbytes()) == bytes &&
                              static_cast<size_t>(e.values.nbytes()) == value_bytes;
      if (same_owner && same_sizes &&
          std::memcmp(e.values.data_ptr(), values.data_ptr(), value_bytes) == 0) {
        c.lru.splice(c.lru.begin(), c.lru, e.lru);
        ++c.hits;
        return e.packed;
      }
      // A weight updated in place (a training step): its buffers are refilled, unless another
      // call still reads them.
      if (same_owner && same_sizes && e.packed.use_count() == 1) {
        reuse_packed = e.packed;
        reuse_values = e.values;
      }
      c.erase(it);
    }
    ++c.misses;
  }
  // Packed outside the lock: other threads keep converting meanwhile.
  const auto bytes_tensor = [](size_t n) {
    return at::empty({static_cast<int64_t>(n)}, at::TensorOptions(at::kByte));
  };
  at::Tensor packed = reuse_packed.defined() ? reuse_packed : bytes_tensor(bytes);
  at::Tensor kept = reuse_values.defined() ? reuse_values : bytes_tensor(value_bytes);
  pack(packed.data_ptr());
  std::memcpy(kept.data_ptr(), values.data_ptr(), value_bytes);
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto it = c.entries.begin(); it != c.entries.end();) {  // drop dead weights' entries
    auto next = std::next(it);
    if (it->second.owner.expired()) c.erase(it);
    it = next;
  }
  // Admitted while it fits: a model whose packings exceed the bound caches its first layers
  // and packs the rest per call, instead of evicting in a cycle (a new allocation, and its
  // page faults, every call).
  const int64_t entry_bytes = static_cast<int64_t>(bytes + value_bytes);
  if (c.entries.count(key) == 0 && c.bytes + entry_bytes <= bound_bytes()) {
    c.lru.push_front(key);
    c.entries.emplace(key, Entry{c10::weak_intrusive_ptr<c10::TensorImpl>(
                                     weight->getIntrusivePtr()),
                                 kept, packed, c.lru.begin()});
    c.bytes += entry_bytes;
  }
  return packed;
}

WeightCacheStats weight_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {static_cast<int64_t>(c.entries.size()), c.bytes, c.hits, c.misses};
}

void clear_weight_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.clear();
  c.lru.clear();
  c.bytes = c.hits = c.misses = 0;
}

}  // namespace cnnext::cpu
