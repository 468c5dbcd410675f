// Autograd kernels of the spyre ops (see autograd.cpp).
#pragma once

namespace spyre_ops {

// Registers the Autograd kernels of rms_norm, fused_add_rms_norm and
// fused_add_rms_norm_ of every op family (variants.h). Idempotent; call once
// the schemas exist.
void register_autograd_kernels();

}  // namespace spyre_ops
