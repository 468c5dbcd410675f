// The spyre ops' forward written with differentiable ATen ops, for what the
// C++ autograd::Function of csrc/autograd.cpp cannot do: torch.func transforms
// (grad, vjp, jacrev, jacfwd, jvp, hessian, vmap over any of them), which run
// no C++ Function, and forward-mode AD, for which it has no formula. Autograd
// and functorch differentiate these ops themselves, to any order.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace spyre_ops {

// Whether a call must take the composite path: an input is differentiated by
// a functorch grad or jvp transform, or carries a forward-mode tangent. Reads
// only each tensor's dispatch keys and forward grad.
bool needs_composite(const at::Tensor& x, const at::Tensor* residual, const std::optional<at::Tensor>& weight);

// y = x / sqrt(mean(x^2) + eps) * weight over the trailing normalized_shape
// dims, in float32 (float64 for float64 x), rounded once to x's dtype.
at::Tensor composite_rms_norm(
    const at::Tensor& x, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, double eps);

// (rms_norm(x + residual), x + residual), the sum in float32 rounded to x's dtype.
std::tuple<at::Tensor, at::Tensor> composite_fused_add_rms_norm(
    const at::Tensor& x,
    const at::Tensor& residual,
    c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

}  // namespace spyre_ops
