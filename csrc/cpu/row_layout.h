// Where the rows of the tensors of one CPU kernel call start in memory, so that
// rows are read and written where they are, whatever the strides of the leading
// dims (q/k views of a fused qkv tensor, views into a larger buffer): each row
// itself (the normalized dims) must be contiguous, for the vector loops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>

namespace spyre_ops::cpu {

// Whether each row of t (its last `row_dims` dims) is contiguous in memory.
bool has_contiguous_rows(const at::Tensor& t, int64_t row_dims);

// t itself when its rows are contiguous, else a contiguous copy of it.
at::Tensor with_contiguous_rows(const at::Tensor& t, int64_t row_dims);

// The leading dims of up to kTensors tensors of one shape, each with contiguous
// rows: row r of tensor k starts `offset(r)[k]` elements from its data pointer.
// Dims are merged where every tensor allows it and size-1 dims dropped, so
// contiguous tensors (and rows with one stride) have a single leading dim.
class RowLayout {
 public:
  static constexpr int kTensors = 4;
  using Offsets = std::array<int64_t, kTensors>;

  // tensors: defined tensors of one shape, each with contiguous rows; null
  // entries stand for unused slots (offset 0).
  RowLayout(std::initializer_list<const at::Tensor*> tensors, int64_t row_dims);

  // Calls f(r, offsets) for the rows r in [begin, end), in order.
  template <typename F>
  void for_rows(int64_t begin, int64_t end, F&& f) const {
    const int64_t nd = static_cast<int64_t>(sizes_.size());
    const int64_t inner = sizes_[nd - 1];
    const int64_t* step = &strides_[(nd - 1) * kTensors];
    int64_t r = begin;
    while (r < end) {
      // The row's position: its index in the innermost dim, then the outer ones.
      int64_t outer = r / inner;
      const int64_t i = r % inner;
      Offsets o{};
      for (int k = 0; k < kTensors; ++k) {
        o[k] = i * step[k];
      }
      for (int64_t d = nd - 2; d >= 0 && outer > 0; --d) {
        const int64_t id = outer % sizes_[d];
        outer /= sizes_[d];
        for (int k = 0; k < kTensors; ++k) {
          o[k] += id * strides_[d * kTensors + k];
        }
      }
      // Then along the innermost dim, one stride per row.
      const int64_t n = std::min(inner - i, end - r);
      for (int64_t j = 0; j < n; ++j) {
        f(r + j, static_cast<const Offsets&>(o));
        for (int k = 0; k < kTensors; ++k) {
          o[k] += step[k];
        }
      }
      r += n;
    }
  }

 private:
  c10::SmallVector<int64_t, 4> sizes_;                // merged leading dims, outermost first; never empty
  c10::SmallVector<int64_t, 4 * kTensors> strides_;  // strides_[d * kTensors + k]: tensor k's stride of dim d
};

}  // namespace spyre_ops::cpu
