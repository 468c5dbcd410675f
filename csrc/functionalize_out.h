// Functionalization of the out= overload spyre::rms_norm.out, so that graphs
// holding it can be functionalized (AOTAutograd, torch.compile): the call
// becomes the functional spyre::rms_norm followed by a write into `out`, the
// way PyTorch handles its own out= operators.
#pragma once

namespace spyre_ops {

// Registers the Functionalize kernel of spyre::rms_norm.out. Idempotent.
void register_out_functionalization();

}  // namespace spyre_ops
