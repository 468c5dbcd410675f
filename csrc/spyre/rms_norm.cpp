// Spyre kernels of rms_norm, fused_add_rms_norm and fused_add_rms_norm_.
//
// Spyre computes in fp16 (bf16 is stored as fp16; float32 reductions over a
// padded row are unreliable), and the plain formula x * rsqrt(mean(x*x) + eps)
// fails there: x*x overflows for |x| > 256 and is subnormal for |x| ~ 1e-3.
// So each row is first divided by its scale s = max(max|x|, 2^-14):
//
//   xs = x / s                                  (|xs| <= 1, largest element exactly 1 in size)
//   y  = xs * rsqrt(mean(xs*xs) + (eps/s)/s) * weight
//
// which is x * rsqrt(mean(x*x) + eps) * weight in exact arithmetic. The floor
// 2^-14 (fp16's smallest normal) keeps all-zero rows at 0 and subnormal scales
// out of the divisions. eps/s is divided by s again rather than eps by s*s,
// since s*s is subnormal in fp16 for small rows.
//
// Every step is an at:: op that torch-spyre runs on the device
// (spyre_ops/emulator/device_ops.py): linalg_vector_norm, clamp, div, reciprocal,
// mul, mean, add, rsqrt, and dtype conversions, which reach the device as
// empty_strided + _copy_from (device to device). No .item(), no host scalars
// read back, no copies to or from the host.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <cmath>
#include <limits>

#include "../checks.h"
#include "kernels.h"

namespace spyre_ops::spyre {
namespace {

// fp16's smallest normal number.
constexpr double kMinScale = 6.103515625e-05;

void check_last_dim_only(const char* op, at::IntArrayRef normalized_shape) {
  TORCH_CHECK(
      normalized_shape.size() == 1,
      op, ": on Spyre only the last dimension can be normalized, so normalized_shape must have "
      "exactly one element, got ", normalized_shape);
}

// The dtype the kernel computes in for an input of dtype `in`.
at::ScalarType compute_dtype_for(at::ScalarType in) {
  return in == at::kDouble ? at::kDouble : compute_dtype();
}

// RMSNorm of x over its last dimension, as a new contiguous tensor of x's dtype.
at::Tensor normalize_last_dim(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps) {
  const at::ScalarType in = x.scalar_type();
  if (x.numel() == 0) {
    return at::empty(x.sizes(), x.options());
  }
  const at::ScalarType c = compute_dtype_for(in);
  // bf16 and fp32 inputs may hold values beyond fp16's range (on Spyre bf16 is
  // stored as fp16, but spyre_ops does not rely on that): scale them in their
  // own dtype, and convert to fp16 only once |values| <= 1. Otherwise convert
  // first, so that the scaling is done at the compute precision.
  const bool scale_in_input_dtype = c == at::kHalf && (in == at::kBFloat16 || in == at::kFloat);
  const at::Tensor xin = scale_in_input_dtype ? x : x.to(c);

  const at::Tensor m = at::linalg_vector_norm(xin, std::numeric_limits<double>::infinity(), at::IntArrayRef{-1}, true);
  const at::Tensor s = at::clamp(m, kMinScale);
  const at::Tensor xs = at::div(xin, s).to(c);
  const at::Tensor eps_term = at::div(at::mul(at::reciprocal(s), eps), s).to(c);

  const at::Tensor mean_sq = at::mean(at::mul(xs, xs), at::IntArrayRef{-1}, true);
  at::Tensor y = at::mul(xs, at::rsqrt(at::add(mean_sq, eps_term)));
  if (weight.has_value()) {
    y = at::mul(y, weight->to(c));
  }
  y = y.to(in);
  return y.is_contiguous() ? y : y.contiguous();
}

at::Tensor contiguous_sum(const at::Tensor& x, const at::Tensor& residual) {
  const at::Tensor summed = at::add(x, residual);
  return summed.is_contiguous() ? summed : summed.contiguous();
}

}  // namespace

at::Tensor rms_norm(
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = "spyre::rms_norm";
  check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_last_dim_only(op, normalized_shape);
  return normalize_last_dim(x, weight, eps);
}

at::Tensor& rms_norm_out(
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out) {
  const char* op = "spyre::rms_norm.out";
  check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_out(op, x, out);
  check_last_dim_only(op, normalized_shape);
  at::assert_no_internal_overlap(out);
  // One device-to-device copy (_copy_from, on the device list) into out.
  out.copy_(normalize_last_dim(x, weight, eps));
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(
    const at::Tensor& x,
    const at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = "spyre::fused_add_rms_norm";
  check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_residual(op, x, residual);
  check_last_dim_only(op, normalized_shape);
  // The sum is rounded to x's dtype before it is normalized, as on the CPU.
  at::Tensor summed = contiguous_sum(x, residual);
  at::Tensor out = normalize_last_dim(summed, weight, eps);
  return {out, summed};
}

void fused_add_rms_norm_(
    at::Tensor& x,
    at::Tensor& residual,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = "spyre::fused_add_rms_norm_";
  check_rms_norm_args(op, x, normalized_shape, weight, eps);
  check_residual(op, x, residual);
  check_last_dim_only(op, normalized_shape);
  check_inplace_no_overlap(x, residual);
  const at::Tensor summed = at::add(x, residual);
  const at::Tensor out = normalize_last_dim(summed, weight, eps);
  residual.copy_(summed);
  x.copy_(out);
}

}  // namespace spyre_ops::spyre
