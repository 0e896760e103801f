#include "conv_select.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "conv2d_workspace.h"
#include "conv_cost_model.h"

namespace cnnext::cpu {
namespace {

// The row CNNEXT_CONV_ALGO names for this problem: "direct", "pointwise" and "im2col" name
// the NHWC row of that kind for a channels_last problem.
const ConvAlgorithm* forced_algorithm(const ConvProblem& pr) {
  switch (conv_algo_override()) {
    case ConvAlgo::Auto:
      return nullptr;
    case ConvAlgo::Im2col:
      return pr.channels_last ? &kIm2colNhwcAlgorithm : &kIm2colAlgorithm;
    case ConvAlgo::Direct:
      return pr.channels_last ? &kDepthwiseNhwcAlgorithm : &kDepthwiseAlgorithm;
    case ConvAlgo::Winograd:
      return &kWinogradAlgorithm;
    case ConvAlgo::Implicit:
      return &kImplicitAlgorithm;
    case ConvAlgo::Pointwise:
      return pr.channels_last ? &kPointwiseNhwcAlgorithm : &kPointwiseAlgorithm;
    case ConvAlgo::Matmul:
      return &kMatmulAlgorithm;
    case ConvAlgo::Grouped:
      return &kGroupedNhwcAlgorithm;
  }
  return nullptr;
}

std::atomic<bool> g_benchmark{false};

// The measured choice's key: everything the table's applies() and the kernels' speed depend on.
struct Key {
  std::array<int64_t, 19> v;
  bool operator==(const Key& o) const { return v == o.v; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};

Key make_key(const ConvProblem& pr, ConvPass pass) {
  const Conv2dGeometry& g = pr.g;
  const Conv2dParams& p = pr.p;
  return Key{{g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.kernel_h, g.kernel_w,
              g.groups, p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0],
              p.dilation[1], static_cast<int64_t>(pr.dtype), pr.threads,
              static_cast<int64_t>(pass), static_cast<int64_t>(conv_algo_override()),
              static_cast<int64_t>(pr.channels_last)}};
}

// Bounded: when full, the cache is emptied (choices are cheap to measure again, and a program
// that sees this many distinct shapes is not repeating them).
constexpr size_t kMaxCachedChoices = 4096;
std::mutex g_cache_mutex;
std::unordered_map<Key, const ConvAlgorithm*, KeyHash>& cache() {
  static auto* c = new std::unordered_map<Key, const ConvAlgorithm*, KeyHash>();
  return *c;
}

double seconds_of(const ConvAlgorithm* a, const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  using clock = std::chrono::steady_clock;
  // One warm-up (workspaces, page faults), then the best of a few runs.
  a->run(pr, pass, t);
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = clock::now();
    a->run(pr, pass, t);
    best = std::min(best, std::chrono::duration<double>(clock::now() - start).count());
  }
  return best;
}

const ConvAlgorithm* measure(const ConvProblem& pr, ConvPass pass, ConvTensors& t) {
  const std::vector<const ConvAlgorithm*> rows = applicable_algorithms(pr, pass);
  if (rows.size() <= 1) return rows.empty() ? nullptr : rows.front();
  const ConvAlgorithm* best = nullptr;
  double best_s = std::numeric_limits<double>::infinity();
  for (const ConvAlgorithm* a : rows) {
    const double s = seconds_of(a, pr, pass, t);
    if (s < best_s) best = a, best_s = s;
  }
  return best;
}

// Forward and grad_input promise the same bits for every thread count (README: Determinism),
// so the rule ranks their rows as if the machine's logical CPUs ran them: a choice that moved
// with the thread count would move the rounding (seen on a Zen 4 VM: a 2-group 1x1
// grad_input ranked im2col_nhwc first at 1 thread and pointwise_nhwc at 2). grad_weight's
// partial sums follow the thread count anyway; it is ranked at the call's own count.
ConvProblem ranked(const ConvProblem& pr, ConvPass pass) {
  static const int64_t machine_threads =
      std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  if (pass == ConvPass::GradWeight) return pr;
  ConvProblem q = pr;
  q.threads = machine_threads;
  return q;
}

}  // namespace

const char* conv_pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::Forward:
      return "forward";
    case ConvPass::GradInput:
      return "grad_input";
    case ConvPass::GradWeight:
      return "grad_weight";
  }
  return "?";
}

std::vector<const ConvAlgorithm*> applicable_algorithms(const ConvProblem& pr, ConvPass pass) {
  std::vector<const ConvAlgorithm*> rows;
  const ConvAlgorithmTable table = conv_algorithms();
  for (int i = 0; i < table.count; ++i)
    if (table.rows[i]->applies(pr, pass)) rows.push_back(table.rows[i]);
  return rows;
}

bool layout_served(const ConvProblem& pr, ConvPass pass) {
  const ConvAlgorithm* forced = forced_algorithm(pr);
  if (forced != nullptr && !forced->applies(pr, pass)) return false;
  return !applicable_algorithms(pr, pass).empty();
}

bool choose_nhwc(const ConvProblem& nhwc, ConvPass pass, double copy_bytes) {
  if (!layout_served(nhwc, pass)) return false;
  if (forced_algorithm(nhwc) != nullptr) return true;  // the forced row has an NHWC form
  ConvProblem nchw = nhwc;
  nchw.channels_last = false;
  const ConvAlgorithm* a = choose_by_rule(nhwc, pass);
  const ConvAlgorithm* b = choose_by_rule(nchw, pass);
  if (b == nullptr) return true;
  return a->cost(ranked(nhwc, pass), pass) <=
         b->cost(ranked(nchw, pass), pass) + layout_copy_seconds(copy_bytes);
}

const ConvAlgorithm* choose_by_rule(const ConvProblem& pr, ConvPass pass) {
  const ConvAlgorithm* forced = forced_algorithm(pr);
  if (forced != nullptr && forced->applies(pr, pass)) return forced;
  const ConvAlgorithmTable table = conv_algorithms();
  const ConvAlgorithm* best = nullptr;
  double best_s = std::numeric_limits<double>::infinity();
  for (int i = 0; i < table.count; ++i) {
    const ConvAlgorithm* a = table.rows[i];
    if (!a->applies(pr, pass)) continue;
    const double s = a->cost(ranked(pr, pass), pass);
    if (best == nullptr || s < best_s) best = a, best_s = s;
  }
  return best;
}

const ConvAlgorithm* choose_conv_algorithm(const ConvProblem& pr, ConvPass pass,
                                           ConvTensors& t) {
  if (!g_benchmark.load(std::memory_order_relaxed) || conv_algo_override() != ConvAlgo::Auto)
    return choose_by_rule(pr, pass);
  const Key key = make_key(pr, pass);
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = cache().find(key);
    if (it != cache().end()) return it->second;
  }
  // Measured outside the lock: other threads keep running convs meanwhile (two threads that
  // miss the same key both measure it; the first answer stays).
  const ConvAlgorithm* best = measure(pr, pass, t);
  if (best == nullptr) return choose_by_rule(pr, pass);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (cache().size() >= kMaxCachedChoices) cache().clear();
  return cache().emplace(key, best).first->second;
}

void set_conv_benchmark(bool enabled) { g_benchmark.store(enabled); }
bool conv_benchmark_enabled() { return g_benchmark.load(); }
void clear_conv_benchmark_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  cache().clear();
}
int64_t conv_benchmark_cache_size() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return static_cast<int64_t>(cache().size());
}

}  // namespace cnnext::cpu
