// Typed dispatcher handles of the spyre ops, for the C++ code that calls or
// redispatches them (autograd, ADInplaceOrView, Functionalize, the eager
// entry points). Each is looked up on first use: the schemas are defined from
// Python (spyre_ops/_library.py) after this module is loaded.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace spyre_ops::handle {

using OptTensor = std::optional<at::Tensor>;
using RmsNormSig = at::Tensor(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using RmsNormOutSig = at::Tensor&(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double, at::Tensor&);
using FusedSig =
    std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using FusedInplaceSig = void(at::Tensor&, at::Tensor&, c10::SymIntArrayRef, const OptTensor&, double);
using BackwardSig = FusedSig;  // (grad_out, x, normalized_shape, weight, eps) -> (grad_x, grad_weight)

const c10::TypedOperatorHandle<RmsNormSig>& rms_norm();
const c10::TypedOperatorHandle<RmsNormOutSig>& rms_norm_out();
const c10::TypedOperatorHandle<FusedSig>& fused_add_rms_norm();
const c10::TypedOperatorHandle<FusedInplaceSig>& fused_add_rms_norm_();
const c10::TypedOperatorHandle<BackwardSig>& rms_norm_backward();

}  // namespace spyre_ops::handle
