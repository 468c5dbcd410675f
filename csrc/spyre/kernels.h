// Spyre (PrivateUse1) kernels of the spyre ops.
//
// They are written only with device-agnostic at:: ops from the list of ops
// torch-spyre runs on the device (spyre_ops/emulator/device_ops.py holds that
// list), so that on a Spyre card every step stays on the card: no host<->device
// copy and no CPU fallback inside a call. This file does not depend on the
// emulated device (csrc/emulator), which only serves to test these kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace spyre_ops::spyre {

at::Tensor rms_norm(
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// rms_norm into `out` (any strides; may be x itself): the result is computed
// in full before out is written.
at::Tensor& rms_norm_out(
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out);

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(
    const at::Tensor& x,
    const at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

void fused_add_rms_norm_(
    at::Tensor& x,
    at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// The compute-dtype policy for 16-bit and float32 inputs: at::kHalf (the
// default: what Spyre computes in) or at::kFloat (for stacks whose float32
// reductions are reliable). float64 inputs are computed in float64.
at::ScalarType compute_dtype();
void set_compute_dtype(at::ScalarType dtype);

// Registers the kernels above for the PrivateUse1 dispatch key. Idempotent.
void register_kernels();

}  // namespace spyre_ops::spyre
