#include "composite.h"

#include "checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace spyre_ops {
namespace {

// A tensor that a functorch grad or jvp transform is differentiating is a
// TensorWrapper (DispatchKey FuncTorchGradWrapper); a forward-mode tangent
// shows as a forward grad. Either needs the composite path.
bool differentiated_by_transform_or_forward_ad(const at::Tensor& t) {
  return t.key_set().has(c10::DispatchKey::FuncTorchGradWrapper) || t._fw_grad(/*level=*/0).defined();
}

at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

bool needs_composite(const at::Tensor& x, const at::Tensor* residual, const std::optional<at::Tensor>& weight) {
  return differentiated_by_transform_or_forward_ad(x) ||
         (residual != nullptr && differentiated_by_transform_or_forward_ad(*residual)) ||
         (weight.has_value() && differentiated_by_transform_or_forward_ad(*weight));
}

at::Tensor composite_rms_norm(
    const at::Tensor& x, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, double eps) {
  // The kernels' checks first: the same errors as on the kernel path.
  if (const auto ns = c10::asIntArrayRefSlowOpt(normalized_shape)) {
    check_rms_norm_args("spyre::rms_norm", x, *ns, weight, eps);
  }
  std::vector<int64_t> dims;
  for (int64_t d = x.dim() - static_cast<int64_t>(normalized_shape.size()); d < x.dim(); ++d) {
    dims.push_back(d);
  }
  const at::ScalarType acc = acc_dtype(x);
  const at::Tensor xf = x.to(acc);
  at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(dims, /*keepdim=*/true) + eps);
  if (weight.has_value()) {
    y = y * weight->to(acc);
  }
  return y.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> composite_fused_add_rms_norm(
    const at::Tensor& x,
    const at::Tensor& residual,
    c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = "spyre::fused_add_rms_norm";
  if (const auto ns = c10::asIntArrayRefSlowOpt(normalized_shape)) {
    check_rms_norm_args(op, x, *ns, weight, eps);
  }
  check_residual(op, x, residual);
  const at::ScalarType acc = acc_dtype(x);
  const at::Tensor sum = (x.to(acc) + residual.to(acc)).to(x.scalar_type());
  return {composite_rms_norm(sum, normalized_shape, weight, eps), sum};
}

}  // namespace spyre_ops
