// CPU forward kernels: rms_norm, rms_norm.out, fused_add_rms_norm, fused_add_rms_norm_,
// of each op family (variants.h: the weight offset is a parameter of the row loop).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>

#include <type_traits>

#include "../checks.h"
#include "fresh_output.h"
#include "kernels.h"
#include "rms_norm_rows.h"
#include "row_layout.h"

namespace spyre_ops::cpu {
namespace {

// Runs rms_norm_rows on tensors of x's shape whose rows (the last `row_dims`
// dims) are each contiguous, where they are, whatever their leading strides;
// chooses how the weight is read: as x's own dtype, as the accumulator dtype,
// or converted to the latter.
void launch(
    const at::Tensor& x,
    const at::Tensor* residual,
    at::Tensor* residual_out,
    const std::optional<at::Tensor>& weight,
    at::Tensor& y,
    RowShape shape,
    int64_t row_dims,
    double eps,
    double weight_offset) {
  if (shape.rows == 0 || shape.cols == 0) {
    return;
  }
  const RowLayout rows_at({&x, residual, residual_out, &y}, row_dims);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spyre_rms_norm", [&] {
    using T = scalar_t;
    using Acc = typename AccOf<T>::type;
    const T* res = residual ? residual->const_data_ptr<T>() : nullptr;
    T* res_out = residual_out ? residual_out->data_ptr<T>() : nullptr;
    auto run = [&](const auto* w) {
      rms_norm_rows(
          x.const_data_ptr<T>(), res, res_out, w, y.data_ptr<T>(), rows_at, shape.rows, shape.cols, eps,
          weight_offset);
    };
    // A 16-bit weight is widened once per call, unless there are too few rows
    // for that to pay for its own allocation and conversion, or the row loop
    // reads it as it is (bfloat16 on AVX2: kBf16EvenOdd).
    constexpr int64_t kWidenWeightRows = 8;
    constexpr bool kReadsOwnDtype = std::is_same_v<T, Acc> || (kBf16EvenOdd && std::is_same_v<T, c10::BFloat16>);
    if (!weight.has_value()) {
      run(static_cast<const Acc*>(nullptr));
    } else if (weight->scalar_type() == x.scalar_type() && (kReadsOwnDtype || shape.rows < kWidenWeightRows)) {
      const at::Tensor w = weight->contiguous();
      run(w.const_data_ptr<T>());
    } else {
      const at::Tensor w = weight->to(c10::CppTypeToScalarType<Acc>::value).contiguous();
      run(w.const_data_ptr<Acc>());
    }
  });
}

// Whether the row loop may write `written` where it is while reading `read`
// (rows of x's shape): its rows are contiguous, and it either shares no memory
// with `read` or is laid out exactly as it (each row is read before it is written).
bool writes_in_place(const at::Tensor& written, const at::Tensor& read, int64_t row_dims) {
  return has_contiguous_rows(written, row_dims) &&
      (!may_overlap(written, read) ||
       (written.const_data_ptr() == read.const_data_ptr() && written.strides().equals(read.strides())));
}

}  // namespace

at::Tensor rms_norm(
    const Variant& v,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const RowShape shape = check_rms_norm_args(v.rms_norm, x, normalized_shape, weight, eps);
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  const at::Tensor xr = with_contiguous_rows(x, nd);
  at::Tensor y = fresh_output(x);
  launch(xr, nullptr, nullptr, weight, y, shape, nd, eps, v.weight_offset);
  return y;
}

at::Tensor& rms_norm_out(
    const Variant& v,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out) {
  const char* op = v.rms_norm_out;
  const RowShape shape = check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_out(op, x, out);
  check_out_overlaps(op, x, weight, out);
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  const at::Tensor xr = with_contiguous_rows(x, nd);
  if (writes_in_place(out, xr, nd)) {
    launch(xr, nullptr, nullptr, weight, out, shape, nd, eps, v.weight_offset);
  } else {
    at::Tensor y = at::empty(x.sizes(), x.options());
    launch(xr, nullptr, nullptr, weight, y, shape, nd, eps, v.weight_offset);
    out.copy_(y);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(
    const Variant& v,
    const at::Tensor& x,
    const at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = v.fused_add_rms_norm;
  const RowShape shape = check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_residual(op, x, residual);
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  const at::Tensor xr = with_contiguous_rows(x, nd);
  const at::Tensor rr = with_contiguous_rows(residual, nd);
  at::Tensor y = fresh_output(x);
  at::Tensor sum = fresh_output(x);
  launch(xr, &rr, &sum, weight, y, shape, nd, eps, v.weight_offset);
  return {y, sum};
}

void fused_add_rms_norm_(
    const Variant& v,
    at::Tensor& x,
    at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = v.fused_add_rms_norm_;
  const RowShape shape = check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_residual(op, x, residual);
  check_inplace_no_overlap(op, x, residual);
  check_weight_not_written(op, weight, "x", x);
  check_weight_not_written(op, weight, "residual", residual);
  // Tensors with contiguous rows that cannot share memory are updated where
  // they are; others through contiguous copies.
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  if (has_contiguous_rows(x, nd) && has_contiguous_rows(residual, nd) && !may_overlap(x, residual)) {
    launch(x, &residual, &residual, weight, x, shape, nd, eps, v.weight_offset);
    return;
  }
  at::Tensor xc = x.contiguous();
  at::Tensor rc = residual.contiguous();
  launch(xc, &rc, &rc, weight, xc, shape, nd, eps, v.weight_offset);
  if (!xc.is_same(x)) {
    x.copy_(xc);
  }
  if (!rc.is_same(residual)) {
    residual.copy_(rc);
  }
}

}  // namespace spyre_ops::cpu
