// ADInplaceOrView kernels of rms_norm.out and fused_add_rms_norm_: version
// counters of what they write (see inplace_or_view.cpp).
#pragma once

namespace spyre_ops {

// Idempotent; call once the schemas exist.
void register_inplace_or_view_kernels();

}  // namespace spyre_ops
