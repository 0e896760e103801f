#include "conv_algorithms.h"

#include <cstring>

namespace cnnext::cpu {

ConvAlgorithmTable conv_algorithms() {
  // Special-purpose rows first: equal estimates go to the earlier row.
  static const ConvAlgorithm* const rows[] = {
      &kDepthwiseNhwcAlgorithm, &kGroupedNhwcAlgorithm, &kDepthwiseAlgorithm,  &kMatmulAlgorithm,
      &kPointwiseNhwcAlgorithm, &kPointwiseAlgorithm,  &kWinogradAlgorithm,
      &kImplicitAlgorithm,      &kIm2colNhwcAlgorithm, &kIm2colAlgorithm};
  return {rows, static_cast<int>(sizeof(rows) / sizeof(rows[0]))};
}

const ConvAlgorithm* find_conv_algorithm(const char* name) {
  const ConvAlgorithmTable table = conv_algorithms();
  for (int i = 0; i < table.count; ++i)
    if (std::strcmp(table.rows[i]->name, name) == 0) return table.rows[i];
  return nullptr;
}

}  // namespace cnnext::cpu
