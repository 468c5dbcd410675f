// The SIMD capability the CPU kernels were compiled for (setup.py chooses it:
// SPYRE_OPS_CPU_CAPABILITY), and a check that the running CPU has it.
#pragma once

namespace spyre_ops::cpu {

// "avx512+bf16", "avx512", "avx2" or "default".
const char* compiled_capability();

// Throws (c10::Error) naming the missing instruction set when this CPU cannot
// run the kernels as compiled, instead of letting them die of SIGILL later.
void check_cpu_supports_build();

}  // namespace spyre_ops::cpu
