// Registration of the Spyre kernels for PrivateUse1, done on request from Python
// (spyre_ops/_library.py) once the schemas exist, never at load time; and the
// compute-dtype policy they read.
#include <torch/library.h>

#include <atomic>
#include <memory>

#include "kernels.h"

namespace spyre_ops::spyre {
namespace {

std::atomic<at::ScalarType> policy{at::kHalf};

}  // namespace

at::ScalarType compute_dtype() {
  return policy.load();
}

void set_compute_dtype(at::ScalarType dtype) {
  TORCH_CHECK(
      dtype == at::kHalf || dtype == at::kFloat,
      "spyre_ops: the Spyre compute dtype must be torch.float16 or torch.float32, got ", c10::toString(dtype));
  policy.store(dtype);
}

void register_kernels() {
  static std::unique_ptr<torch::Library> lib;
  if (lib) {
    return;
  }
  lib = std::make_unique<torch::Library>(
      torch::Library::IMPL, "spyre", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  lib->impl("rms_norm", TORCH_FN(rms_norm));
  lib->impl("rms_norm.out", TORCH_FN(rms_norm_out));
  lib->impl("fused_add_rms_norm", TORCH_FN(fused_add_rms_norm));
  lib->impl("fused_add_rms_norm_", TORCH_FN(fused_add_rms_norm_));
}

}  // namespace spyre_ops::spyre
