// Run-time ISA detection and the CNNEXT_ISA override.
#include "gemm.h"

#include <c10/util/Exception.h>

#include <cstdlib>

namespace cnnext::cpu {

Isa best_supported_isa() {
#if defined(__x86_64__) || defined(__i386__)
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
    return Isa::Portable;
  }();
  return best;
#else
  return Isa::Portable;
#endif
}

Isa parse_isa(const std::string& name) {
  if (name == "auto" || name.empty()) return active_isa();
  // The bfloat16 extensions name AVX-512 machines: their float32 kernels are AVX-512's
  // (gemm/bf16_dot.h reads the variable for the bfloat16 products).
  if (name == "avx512" || name == "avx512bf16" || name == "amx") return Isa::Avx512;
  if (name == "avx2") return Isa::Avx2;
  if (name == "portable") return Isa::Portable;
  TORCH_CHECK(false, "cnnext: unknown isa='", name,
              "' (expected 'auto', 'amx', 'avx512bf16', 'avx512', 'avx2' or 'portable')");
}

Isa active_isa() {
  const Isa best = best_supported_isa();
  const char* env = std::getenv("CNNEXT_ISA");
  if (env == nullptr || *env == '\0' || std::string(env) == "auto") return best;
  const Isa wanted = parse_isa(env);
  // Never run an ISA the machine lacks: narrow to what is supported.
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace cnnext::cpu
