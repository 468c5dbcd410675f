// Typed dispatcher handles of the spyre ops, for the C++ code that calls or
// redispatches them (autograd, ADInplaceOrView, Functionalize, the eager
// entry points), one set per op family (variants.h): handle::rms_norm<kGemma>()
// is spyre_ops::gemma_rms_norm. Each is looked up on first use: the schemas are
// defined from Python (spyre_ops/_library.py) after this module is loaded.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

#include "variants.h"

namespace spyre_ops::handle {

using OptTensor = std::optional<at::Tensor>;
using RmsNormSig = at::Tensor(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using RmsNormOutSig = at::Tensor&(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double, at::Tensor&);
using FusedSig =
    std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using FusedInplaceSig = void(at::Tensor&, at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using BackwardSig = FusedSig;  // (grad_out, x, normalized_shape, weight, eps) -> (grad_x, grad_weight)

// The operator `name` ("ns::op"), overload `overload` ("" for the default).
c10::OperatorHandle find(const char* name, const char* overload);

template <const Variant& V = kRmsNorm>
const c10::TypedOperatorHandle<RmsNormSig>& rms_norm() {
  static const auto op = find(V.rms_norm, "").typed<RmsNormSig>();
  return op;
}

template <const Variant& V = kRmsNorm>
const c10::TypedOperatorHandle<RmsNormOutSig>& rms_norm_out() {
  static const auto op = find(V.rms_norm, "out").typed<RmsNormOutSig>();
  return op;
}

template <const Variant& V = kRmsNorm>
const c10::TypedOperatorHandle<FusedSig>& fused_add_rms_norm() {
  static const auto op = find(V.fused_add_rms_norm, "").typed<FusedSig>();
  return op;
}

template <const Variant& V = kRmsNorm>
const c10::TypedOperatorHandle<FusedInplaceSig>& fused_add_rms_norm_() {
  static const auto op = find(V.fused_add_rms_norm_, "").typed<FusedInplaceSig>();
  return op;
}

template <const Variant& V = kRmsNorm>
const c10::TypedOperatorHandle<BackwardSig>& rms_norm_backward() {
  static const auto op = find(V.rms_norm_backward, "").typed<BackwardSig>();
  return op;
}

}  // namespace spyre_ops::handle
