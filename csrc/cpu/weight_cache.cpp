#include "weight_cache.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>

namespace cnnext::cpu {
namespace {

thread_local const at::Tensor* t_scope_weight = nullptr;

struct Entry {
  c10::weak_intrusive_ptr<c10::TensorImpl> owner;  // dies with the weight tensor
  uint32_t version;
  const void* data;
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
    bytes -= static_cast<int64_t>(it->second.packed.nbytes());
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

WeightCacheScope::WeightCacheScope(const at::Tensor& weight) : previous_(t_scope_weight) {
  t_scope_weight = &weight;
}
WeightCacheScope::~WeightCacheScope() { t_scope_weight = previous_; }

uint64_t weight_pack_kind(std::initializer_list<int64_t> parts) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t v : parts) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
  return h;
}

at::Tensor cached_packed_weight(uint64_t kind, size_t bytes,
                                const std::function<void(void*)>& pack) {
  const at::Tensor* weight = t_scope_weight;
  if (weight == nullptr || at::GradMode::is_enabled() || bytes == 0 ||
      static_cast<int64_t>(bytes) > bound_bytes())
    return at::Tensor();
  const c10::TensorImpl* impl = weight->unsafeGetTensorImpl();
  const uint32_t version = weight->_version();
  const void* data = weight->data_ptr();
  const auto key = std::make_pair(impl, kind);
  Cache& c = cache();
  at::Tensor reuse;  // a stale entry's buffer, repacked in place (no new pages)
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.entries.find(key);
    if (it != c.entries.end()) {
      Entry& e = it->second;
      // The same TensorImpl alive (not a new tensor at a reused address).
      const bool same_owner = e.owner.lock().get() == impl;
      if (same_owner && e.version == version && e.data == data &&
          static_cast<size_t>(e.packed.nbytes()) == bytes) {
        c.lru.splice(c.lru.begin(), c.lru, e.lru);
        ++c.hits;
        return e.packed;
      }
      // A weight updated in place (a training step): its buffer is repacked, unless another
      // call still reads it.
      if (same_owner && static_cast<size_t>(e.packed.nbytes()) == bytes &&
          e.packed.use_count() == 1)
        reuse = e.packed;
      c.erase(it);
    }
    ++c.misses;
  }
  // Packed outside the lock: other threads keep converting meanwhile.
  at::Tensor packed = reuse.defined()
                          ? reuse
                          : at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions(at::kByte));
  pack(packed.data_ptr());
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto it = c.entries.begin(); it != c.entries.end();) {  // drop dead weights' entries
    auto next = std::next(it);
    if (it->second.owner.expired()) c.erase(it);
    it = next;
  }
  // Admitted while it fits: a model whose packings exceed the bound caches its first layers
  // and packs the rest per call, instead of evicting in a cycle (a new allocation, and its
  // page faults, every call).
  if (c.entries.count(key) == 0 && c.bytes + static_cast<int64_t>(bytes) <= bound_bytes()) {
    c.lru.push_front(key);
    c.entries.emplace(key, Entry{c10::weak_intrusive_ptr<c10::TensorImpl>(
                                     weight->getIntrusivePtr()),
                                 version, data, packed, c.lru.begin()});
    c.bytes += static_cast<int64_t>(bytes);
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
