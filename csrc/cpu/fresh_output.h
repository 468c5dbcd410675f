// Allocation of the fresh outputs of the functional CPU kernels.
#pragma once

#include <ATen/core/Tensor.h>

namespace spyre_ops::cpu {

// An uninitialized contiguous tensor like x. A large one (>= 4 MiB) is asked
// to be backed by transparent huge pages (Linux, madvise mode), so that writing
// it for the first time takes a few page faults instead of one per 4 KiB page.
at::Tensor fresh_output(const at::Tensor& x);

}  // namespace spyre_ops::cpu
