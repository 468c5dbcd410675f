#include "capability.h"

#include <c10/util/Exception.h>

namespace spyre_ops::cpu {

const char* compiled_capability() {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  return "avx512+bf16";
#elif defined(CPU_CAPABILITY_AVX512)
  return "avx512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "avx2";
#else
  return "default";
#endif
}

void check_cpu_supports_build() {
#if (defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  struct Feature {
    const char* name;
    bool present;
  };
  const Feature needed[] = {
#if defined(CPU_CAPABILITY_AVX512)
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},
      {"avx512bw", __builtin_cpu_supports("avx512bw") != 0},
      {"avx512vl", __builtin_cpu_supports("avx512vl") != 0},
      {"avx512dq", __builtin_cpu_supports("avx512dq") != 0},
#endif
#if defined(__AVX512BF16__)
      {"avx512bf16", __builtin_cpu_supports("avx512bf16") != 0},
#endif
      {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"fma", __builtin_cpu_supports("fma") != 0},
      {"f16c", __builtin_cpu_supports("f16c") != 0},
  };
  for (const Feature& f : needed) {
    TORCH_CHECK(
        f.present, "spyre_ops: the CPU kernels were built for ", compiled_capability(),
        " but this CPU lacks ", f.name,
        "; rebuild spyre_ops on this machine (SPYRE_OPS_CPU_CAPABILITY=auto) or with "
        "SPYRE_OPS_CPU_CAPABILITY=default");
  }
#endif
}

}  // namespace spyre_ops::cpu
