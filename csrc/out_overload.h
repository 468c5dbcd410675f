// The dispatch keys of the out= overload spyre::rms_norm.out other than its
// CPU kernel (csrc/cpu/rms_norm.cpp):
//
// * Functionalize: the call becomes the functional spyre::rms_norm followed by
//   a write into `out`, the way PyTorch handles its own out= operators, so that
//   graphs holding it can be functionalized (AOTAutograd, torch.compile).
// * Autograd: out= is not differentiable (as for PyTorch's own out= operators);
//   in grad mode, inputs that require grad are refused rather than silently
//   cut from the graph. The version counter of `out` is bumped by the
//   ADInplaceOrView kernel (inplace_or_view.cpp), in inference mode too.
#pragma once

namespace spyre_ops {

// Registers the Functionalize and Autograd kernels of spyre::rms_norm.out and of
// the other families' rms_norm.out (variants.h). Idempotent.
void register_out_overload_kernels();

}  // namespace spyre_ops
