#include "fresh_output.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace spyre_ops::cpu {

at::Tensor fresh_output(const at::Tensor& x) {
  // The CPU allocation itself, without a second trip through the dispatcher
  // (this runs inside the CPU kernel, below every dispatch key).
  at::Tensor y = at::detail::empty_cpu(x.sizes(), x.scalar_type());
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t nbytes = static_cast<uintptr_t>(y.nbytes());
  if (nbytes >= 2 * kHuge) {
    const auto begin = reinterpret_cast<uintptr_t>(y.data_ptr());
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + nbytes) & ~(kHuge - 1);
    if (last > first) {
      // Advice only: failure (e.g. huge pages disabled) changes nothing.
      (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
    }
  }
#endif
  return y;
}

}  // namespace spyre_ops::cpu
