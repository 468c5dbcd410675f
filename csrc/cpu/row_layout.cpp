#include "row_layout.h"

#include <c10/util/Exception.h>

namespace spyre_ops::cpu {

bool has_contiguous_rows(const at::Tensor& t, int64_t row_dims) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= t.dim() - row_dims; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) {
      return false;
    }
    expected *= t.size(d);
  }
  return true;
}

at::Tensor with_contiguous_rows(const at::Tensor& t, int64_t row_dims) {
  return has_contiguous_rows(t, row_dims) ? t : t.contiguous();
}

RowLayout::RowLayout(std::initializer_list<const at::Tensor*> tensors, int64_t row_dims) {
  TORCH_INTERNAL_ASSERT(tensors.size() <= static_cast<size_t>(kTensors));
  const at::Tensor* shape = nullptr;
  for (const at::Tensor* t : tensors) {
    if (t != nullptr) {
      shape = t;
      break;
    }
  }
  TORCH_INTERNAL_ASSERT(shape != nullptr);
  const int64_t lead = shape->dim() - row_dims;
  for (int64_t d = 0; d < lead; ++d) {
    const int64_t size = shape->size(d);
    if (size == 1) {
      continue;
    }
    std::array<int64_t, kTensors> stride{};
    int k = 0;
    for (const at::Tensor* t : tensors) {
      stride[k++] = t != nullptr ? t->stride(d) : 0;
    }
    // Merged into the dim before it when, for every tensor, stepping over this
    // dim's whole extent is one step of that dim.
    bool merges = !sizes_.empty();
    for (int j = 0; merges && j < kTensors; ++j) {
      merges = strides_[(sizes_.size() - 1) * kTensors + j] == stride[j] * size;
    }
    if (merges) {
      sizes_.back() *= size;
      std::copy(stride.begin(), stride.end(), strides_.end() - kTensors);
    } else {
      sizes_.push_back(size);
      strides_.append(stride.begin(), stride.end());
    }
  }
  if (sizes_.empty()) {
    sizes_.push_back(1);
    strides_.append(kTensors, 0);
  }
}

}  // namespace spyre_ops::cpu
