#include "autograd_fast_path.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <memory>

namespace spyre_ops::cpu {
namespace {

bool needs_autograd(const at::Tensor& t) {
  return t.defined() && (t.requires_grad() || t._fw_grad(/*level=*/0).defined());
}

void autograd_fast_path(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const size_t n = op.schema().arguments().size();
  bool needed = false;
  for (size_t i = stack->size() - n; i < stack->size() && !needed; ++i) {
    const c10::IValue& v = (*stack)[i];
    needed = v.isTensor() && needs_autograd(v.toTensor());
  }
  if (needed && at::GradMode::is_enabled()) {
    // The Python autograd kernel, registered for the Autograd alias key, serves
    // AutogradOther too; it redispatches below autograd with the keys it is given.
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::AutogradOther) | (ks & c10::after_autograd_keyset), stack);
    return;
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
}

}  // namespace

void register_autograd_fast_path() {
  static std::unique_ptr<torch::Library> lib;
  if (lib) {
    return;
  }
  lib = std::make_unique<torch::Library>(
      torch::Library::IMPL, "spyre", c10::DispatchKey::AutogradCPU, __FILE__, __LINE__);
  lib->impl("rms_norm", torch::CppFunction::makeFromBoxedFunction<&autograd_fast_path>());
  lib->impl("fused_add_rms_norm", torch::CppFunction::makeFromBoxedFunction<&autograd_fast_path>());
}

}  // namespace spyre_ops::cpu
