#include "op_handles.h"

namespace spyre_ops::handle {
namespace {

template <typename Sig>
c10::TypedOperatorHandle<Sig> find(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).typed<Sig>();
}

}  // namespace

const c10::TypedOperatorHandle<RmsNormSig>& rms_norm() {
  static const auto op = find<RmsNormSig>("spyre::rms_norm", "");
  return op;
}

const c10::TypedOperatorHandle<RmsNormOutSig>& rms_norm_out() {
  static const auto op = find<RmsNormOutSig>("spyre::rms_norm", "out");
  return op;
}

const c10::TypedOperatorHandle<FusedSig>& fused_add_rms_norm() {
  static const auto op = find<FusedSig>("spyre::fused_add_rms_norm", "");
  return op;
}

const c10::TypedOperatorHandle<FusedInplaceSig>& fused_add_rms_norm_() {
  static const auto op = find<FusedInplaceSig>("spyre::fused_add_rms_norm_", "");
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& rms_norm_backward() {
  static const auto op = find<BackwardSig>("spyre::rms_norm_backward", "");
  return op;
}

}  // namespace spyre_ops::handle
