// Input validation shared by every kernel of the spyre ops (CPU and Spyre).
//
// The Python fake kernels in spyre_ops/fake.py raise the same messages, so an
// error looks the same in eager mode and under torch.compile. Keep the two in
// step: tests/test_errors.py compares them message for message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace spyre_ops {

// A (rows x cols) view of the problem: `cols` is the product of
// normalized_shape, `rows` the product of the leading dims of x.
struct RowShape {
  int64_t rows;
  int64_t cols;
};

// Checks x, normalized_shape, weight and eps; returns the row geometry.
RowShape check_rms_norm_args(
    const char* op,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps);

// Checks that residual can be added to x (same shape, dtype, device).
void check_residual(const char* op, const at::Tensor& x, const at::Tensor& residual);

// Checks that `out` can receive the result for x (same shape, dtype, device).
// For the in-place fused op: x and residual are written, so neither may overlap
// itself (expanded tensors) and they may not share memory.
void check_inplace_no_overlap(const at::Tensor& x, const at::Tensor& residual);

void check_out(const char* op, const at::Tensor& x, const at::Tensor& out);

}  // namespace spyre_ops
