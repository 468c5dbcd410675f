// Registration of the CPU kernels, done on request from Python (spyre_ops/_library.py)
// after the op schemas are defined or adopted, never at load time: a schema that
// clashes with one defined elsewhere must give a Python error, not a failed load.
#include <torch/library.h>

#include <memory>

#include "../out_overload.h"
#include "capability.h"
#include "kernels.h"

namespace spyre_ops::cpu {

void register_kernels() {
  static std::unique_ptr<torch::Library> lib;
  if (lib) {
    return;
  }
  check_cpu_supports_build();
  lib = std::make_unique<torch::Library>(
      torch::Library::IMPL, "spyre", c10::DispatchKey::CPU, __FILE__, __LINE__);
  lib->impl("rms_norm", TORCH_FN(rms_norm));
  lib->impl("rms_norm.out", TORCH_FN(rms_norm_out));
  lib->impl("fused_add_rms_norm", TORCH_FN(fused_add_rms_norm));
  lib->impl("fused_add_rms_norm_", TORCH_FN(fused_add_rms_norm_));
  lib->impl("rms_norm_backward", TORCH_FN(rms_norm_backward));
  register_out_overload_kernels();
}

}  // namespace spyre_ops::cpu
