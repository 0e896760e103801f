#pragma once
// Choosing a row of the algorithm table for one pass of one call:
//   1. CNNEXT_CONV_ALGO=<name> forces that row wherever it applies (tests, and users who want
//      one algorithm's rounding, e.g. im2col instead of Winograd);
//   2. with cnnext.backends.cpu.benchmark on, the first call for a key (geometry, parameters,
//      dtype, threads, pass) times every applicable row on the call's own tensors and caches
//      the fastest (bounded, thread-safe); later calls look the key up;
//   3. otherwise the cost rule: the applicable row with the lowest estimate (conv_cost_model.h).
// Rules 1 and 3 are deterministic functions of the problem.
#include <string>
#include <vector>

#include "conv_algorithms.h"

namespace cnnext::cpu {

// The row the cost rule (or the override) picks; never null for float32/float64 problems
// (im2col applies to every geometry). Forward and grad_input rows are ranked at the machine's
// logical CPU count, not the call's thread count, so their results do not depend on it.
const ConvAlgorithm* choose_by_rule(const ConvProblem& pr, ConvPass pass);

// The row for this call, measuring on `t` in benchmark mode. May run passes into t's outputs
// while measuring; the caller runs the returned row afterwards for the result.
const ConvAlgorithm* choose_conv_algorithm(const ConvProblem& pr, ConvPass pass, ConvTensors& t);

// Whether the problem's layout has a row for the pass that the override (if any) allows: false
// when CNNEXT_CONV_ALGO names a row that has no form in this layout (the caller then runs the
// other layout's rows on copies).
bool layout_served(const ConvProblem& pr, ConvPass pass);

// Whether a channels_last call runs the NHWC problem's rows on its tensors as they lie (true)
// or the NCHW rows on copies (false), moving `copy_bytes` bytes through layout copies. The
// override decides when it names a row; else the cost rule compares the best NHWC estimate
// with the best NCHW estimate plus the copies' estimate (layout_copy_seconds).
bool choose_nhwc(const ConvProblem& nhwc, ConvPass pass, double copy_bytes);

// Applicable rows in table order.
std::vector<const ConvAlgorithm*> applicable_algorithms(const ConvProblem& pr, ConvPass pass);

void set_conv_benchmark(bool enabled);
bool conv_benchmark_enabled();
void clear_conv_benchmark_cache();
int64_t conv_benchmark_cache_size();

}  // namespace cnnext::cpu
