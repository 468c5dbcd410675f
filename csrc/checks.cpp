#include "checks.h"

#include <ATen/MemoryOverlap.h>

#include <c10/util/Exception.h>

#include <cmath>
#include <sstream>

namespace spyre_ops {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The name Python gives the dtype (torch.float32, ...), so that these messages
// read like those of spyre_ops/_checks.py.
std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    case at::kComplexHalf: return "torch.complex32";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) {
    os << (i ? ", " : "") << s[i];
  }
  os << "]";
  return os.str();
}

void check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(
      is_supported_float(t.scalar_type()),
      op, ": ", name, " must be a float32, float64, float16 or bfloat16 tensor, got ",
      dtype_str(t.scalar_type()));
}

void check_same_device(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t) {
  TORCH_CHECK(
      t.device() == x.device(),
      op, ": ", name, " is on ", t.device(), " but x is on ", x.device(),
      "; all tensors must be on the same device");
}

}  // namespace

RowShape check_rms_norm_args(
    const char* op,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  check_float(op, "x", x);
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(k > 0, op, ": normalized_shape must name at least one trailing dimension of x, got []");
  TORCH_CHECK(
      k <= x.dim() && x.sizes().slice(x.dim() - k).equals(normalized_shape),
      op, ": normalized_shape ", shape_str(normalized_shape),
      " does not match the trailing dimensions of x, whose shape is ", shape_str(x.sizes()));
  if (weight.has_value()) {
    const at::Tensor& w = *weight;
    check_float(op, "weight", w);
    check_same_device(op, "weight", x, w);
    TORCH_CHECK(
        w.sizes().equals(normalized_shape),
        op, ": weight has shape ", shape_str(w.sizes()), " but normalized_shape is ",
        shape_str(normalized_shape));
  }
  TORCH_CHECK(
      std::isfinite(eps) && eps >= 0.0,
      op, ": eps must be finite and non-negative, got ", eps);
  int64_t rows = 1;
  for (int64_t d = 0; d < x.dim() - k; ++d) rows *= x.size(d);
  int64_t cols = 1;
  for (int64_t s : normalized_shape) cols *= s;
  return RowShape{rows, cols};
}

void check_residual(const char* op, const at::Tensor& x, const at::Tensor& residual) {
  check_same_device(op, "residual", x, residual);
  TORCH_CHECK(
      residual.sizes().equals(x.sizes()),
      op, ": residual has shape ", shape_str(residual.sizes()), " but x has shape ",
      shape_str(x.sizes()));
  TORCH_CHECK(
      residual.scalar_type() == x.scalar_type(),
      op, ": residual has dtype ", dtype_str(residual.scalar_type()), " but x has dtype ", dtype_str(x.scalar_type()));
}

void check_out(const char* op, const at::Tensor& x, const at::Tensor& out) {
  check_same_device(op, "out", x, out);
  TORCH_CHECK(
      out.sizes().equals(x.sizes()),
      op, ": out has shape ", shape_str(out.sizes()), " but x has shape ", shape_str(x.sizes()));
  TORCH_CHECK(
      out.scalar_type() == x.scalar_type(),
      op, ": out has dtype ", dtype_str(out.scalar_type()), " but x has dtype ", dtype_str(x.scalar_type()));
}

void check_inplace_no_overlap(const at::Tensor& x, const at::Tensor& residual) {
  at::assert_no_internal_overlap(x);
  at::assert_no_internal_overlap(residual);
  at::assert_no_overlap(x, residual);
}

}  // namespace spyre_ops
