// Kernels of the check ops spyre::_check_rms_norm_out and spyre::_check_fused_add_rms_norm_
// (and each family's, variants.h): the argument and overlap checks of rms_norm.out and of
// the in-place op, with nothing computed. Under torch.compile the Python wrappers call
// them first with the real tensors (see spyre_ops/_out_checks.py): in a compiled graph the
// op itself may run on copies (functionalized), which never overlap.
#pragma once

namespace spyre_ops {

// Registers the kernels of the check ops (CompositeExplicitAutograd: any device).
// The schemas must exist (spyre_ops/_out_checks.py defines them). Idempotent.
void register_check_kernels();

}  // namespace spyre_ops
