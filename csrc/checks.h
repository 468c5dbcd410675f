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
void check_inplace_no_overlap(const char* op, const at::Tensor& x, const at::Tensor& residual);

void check_out(const char* op, const at::Tensor& x, const at::Tensor& out);

// For out=: out must not overlap weight, nor itself (an expanded tensor), nor
// x unless it is x itself.
void check_out_overlaps(
    const char* op, const at::Tensor& x, const std::optional<at::Tensor>& weight, const at::Tensor& out);

// Checks that `t` (the argument `name`) is a defined, non-nested-strided tensor.
// check_rms_norm_args, check_residual and check_out call it for their tensors.
void check_tensor_arg(const char* op, const char* name, const at::Tensor& t);

// Whether a and b may share memory: same storage and intersecting byte ranges.
// Exact for dense tensors, conservative for strided ones; it reads only
// metadata, so it also works on functional and fake tensors.
bool may_overlap(const at::Tensor& a, const at::Tensor& b);

// Refuses a weight that shares memory with `written` (out, or an in-place
// op's x or residual): the kernels read weight while writing it.
void check_weight_not_written(
    const char* op, const std::optional<at::Tensor>& weight, const char* name, const at::Tensor& written);

}  // namespace spyre_ops
