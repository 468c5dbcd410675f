#include "checks.h"

#include <ATen/MemoryOverlap.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>
#include <vector>
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
    default: {
      // Every other dtype's Python name is its C++ name in lower case
      // (Float8_e4m3fn -> torch.float8_e4m3fn, UInt16 -> torch.uint16, QInt8 -> torch.qint8).
      std::string name = c10::toString(t);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return "torch." + name;
    }
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
  check_tensor_arg(op, name, t);
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

void check_tensor_arg(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  // A jagged nested tensor is a Python tensor subclass, handled in Python
  // (spyre_ops/nested.py); a strided one reaches the kernels and is refused.
  TORCH_CHECK(
      !t.is_nested() || t.key_set().has(c10::DispatchKey::Python),
      op, ": ", name, " is a nested tensor with the strided layout; only jagged nested tensors "
      "(torch.nested.nested_tensor(..., layout=torch.jagged)) are supported");
}

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
  check_tensor_arg(op, "residual", residual);
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
  check_tensor_arg(op, "out", out);
  check_same_device(op, "out", x, out);
  TORCH_CHECK(
      out.sizes().equals(x.sizes()),
      op, ": out has shape ", shape_str(out.sizes()), " but x has shape ", shape_str(x.sizes()));
  TORCH_CHECK(
      out.scalar_type() == x.scalar_type(),
      op, ": out has dtype ", dtype_str(out.scalar_type()), " but x has dtype ", dtype_str(x.scalar_type()));
}

// Whether a and b may have an element in common. Exact for tensors of the same
// sizes and strides whose dims nest (each stride beyond the reach of the
// smaller ones: any slice or transpose of a dense tensor), may_overlap otherwise.
bool may_share_elements(const at::Tensor& a, const at::Tensor& b);

void check_inplace_no_overlap(const char* op, const at::Tensor& x, const at::Tensor& residual) {
  TORCH_CHECK(
      at::has_internal_overlap(x) != at::MemOverlap::Yes,
      op, ": x overlaps itself (an expanded tensor), and the op writes it; pass x.clone()");
  TORCH_CHECK(
      at::has_internal_overlap(residual) != at::MemOverlap::Yes,
      op, ": residual overlaps itself (an expanded tensor), and the op writes it; pass residual.clone()");
  const at::MemOverlapStatus status = at::get_overlap_status(x, residual);
  TORCH_CHECK(
      status == at::MemOverlapStatus::No || status == at::MemOverlapStatus::TooHard,
      op, ": x and residual overlap, and the op writes both; pass tensors that do not share memory");
  // Strided views of one buffer that PyTorch cannot tell apart ("too hard"):
  // refused unless they provably share no element (an element in both would
  // get only one of its two results).
  TORCH_CHECK(
      status != at::MemOverlapStatus::TooHard || !may_share_elements(x, residual),
      op, ": x and residual may overlap (strided views of one buffer that share elements, or whose "
      "layouts cannot be told apart), and the op writes both; pass tensors that do not share memory "
      "(e.g. residual.clone())");
}

namespace {

// Whether offset `delta` is sum_k d_k * stride_k with |d_k| < size_k, for dims
// sorted by increasing stride that nest (each stride above the reach of the
// dims below it, `below[k]`): at most two digits fit at each level.
bool reachable(const std::vector<std::pair<int64_t, int64_t>>& dims, const std::vector<int64_t>& below,
               int64_t k, int64_t delta) {
  if (k < 0) {
    return delta == 0;
  }
  const auto [stride, size] = dims[k];
  auto floor_div = [](int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); };
  const int64_t lo = std::max(-(size - 1), -floor_div(below[k] - delta, stride));
  const int64_t hi = std::min(size - 1, floor_div(delta + below[k], stride));
  for (int64_t d = lo; d <= hi; ++d) {
    if (reachable(dims, below, k - 1, delta - d * stride)) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool may_share_elements(const at::Tensor& a, const at::Tensor& b) {
  if (!may_overlap(a, b)) {
    return false;
  }
  if (!a.sizes().equals(b.sizes()) || !a.strides().equals(b.strides()) || a.element_size() != b.element_size()) {
    return true;  // not analysed: conservative
  }
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of the dims that step
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1) {
      dims.emplace_back(a.stride(d), a.size(d));
    }
  }
  std::sort(dims.begin(), dims.end());
  std::vector<int64_t> below;  // reach of the dims below each one
  int64_t reach = 0;
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) {
      return true;  // dims that do not nest: not analysed
    }
    below.push_back(reach);
    reach += (size - 1) * stride;
  }
  return reachable(dims, below, static_cast<int64_t>(dims.size()) - 1, b.storage_offset() - a.storage_offset());
}

void check_out_overlaps(
    const char* op, const at::Tensor& x, const std::optional<at::Tensor>& weight, const at::Tensor& out) {
  check_weight_not_written(op, weight, "out", out);
  // out may be x itself (each row is read before it is written) but must not
  // overlap it partially, nor itself.
  TORCH_CHECK(
      at::has_internal_overlap(out) != at::MemOverlap::Yes,
      op, ": out overlaps itself (an expanded tensor), and the op writes it; pass a tensor whose "
      "elements are distinct (e.g. torch.empty_like(x))");
  const at::MemOverlapStatus overlap = at::get_overlap_status(out, x);
  TORCH_CHECK(
      overlap != at::MemOverlapStatus::Partial &&
          (overlap != at::MemOverlapStatus::Full || out.strides().equals(x.strides())),
      op, ": out overlaps x without being x; pass out=x or a tensor that does not share x's memory");
}

}  // namespace spyre_ops

namespace spyre_ops {

bool may_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) {
    return false;
  }
  if (!a.unsafeGetTensorImpl()->unsafe_storage() || !b.unsafeGetTensorImpl()->unsafe_storage() ||
      !a.storage().is_alias_of(b.storage())) {
    return false;
  }
  // The element ranges [first, last] each tensor can touch, in bytes from the storage's start.
  auto span = [](const at::Tensor& t) {
    int64_t lo = t.storage_offset(), hi = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) {
      const int64_t reach = (t.size(d) - 1) * t.stride(d);
      (reach < 0 ? lo : hi) += reach;
    }
    const int64_t item = static_cast<int64_t>(t.element_size());
    return std::pair<int64_t, int64_t>{lo * item, (hi + 1) * item};
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 < b1 && b0 < a1;
}

void check_weight_not_written(
    const char* op, const std::optional<at::Tensor>& weight, const char* name, const at::Tensor& written) {
  TORCH_CHECK(
      !(weight.has_value() && may_overlap(*weight, written)),
      op, ": weight shares memory with ", name, ", which the op writes while it still reads weight; "
      "pass a copy (weight.clone())");
}

}  // namespace spyre_ops
