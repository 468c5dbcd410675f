// CPU kernels of the spyre ops, for the op family `v` (variants.h: its names for
// messages, its weight offset). Each validates its arguments (checks.h) first.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "../variants.h"

namespace spyre_ops::cpu {

at::Tensor rms_norm(
    const Variant& v,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// rms_norm into a preallocated `out` of x's shape, dtype and device (any strides).
at::Tensor& rms_norm_out(
    const Variant& v,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out);

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(
    const Variant& v,
    const at::Tensor& x,
    const at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

void fused_add_rms_norm_(
    const Variant& v,
    at::Tensor& x,
    at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// Gradients of rms_norm: (grad_x, grad_weight). grad_weight has weight's shape
// and dtype, or is an empty 1-D tensor when weight is None.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(
    const Variant& v,
    const at::Tensor& grad_out,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// Registers the kernels above for the CPU dispatch key, for every family. Idempotent. Throws if
// this CPU lacks the SIMD capability the kernels were compiled for.
void register_kernels();

}  // namespace spyre_ops::cpu
