// A C++ fast path in front of the Python autograd of the functional ops, for
// CPU tensors.
//
// spyre_ops/autograd.py registers the autograd of rms_norm and
// fused_add_rms_norm from Python (torch.library.register_autograd), which puts
// a Python function on every call made in grad mode, ~8 us, even when nothing
// requires grad. The kernel registered here for AutogradCPU checks in C++
// whether any input needs a gradient: if none does (the common inference call
// outside torch.inference_mode), it goes straight to the CPU kernel; otherwise
// it hands the call, unchanged, to the Python autograd kernel (which the
// dispatcher keeps in the AutogradOther slot of the same op).
#pragma once

namespace spyre_ops::cpu {

// Registers the fast path for rms_norm and fused_add_rms_norm. Idempotent.
void register_autograd_fast_path();

}  // namespace spyre_ops::cpu
