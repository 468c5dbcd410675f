// CPU kernel of rms_norm_backward. Not performance-critical: plain loops in the
// accumulator dtype, rows in parallel for grad_x and columns in parallel for
// grad_weight, so neither depends on the thread count. The family's weight
// offset (variants.h) enters grad_x only, through the scale w + offset; grad_weight
// is the same for every offset.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../checks.h"
#include "kernels.h"
#include "rms_norm_rows.h"

namespace spyre_ops::cpu {

std::tuple<at::Tensor, at::Tensor> rms_norm_backward(
    const Variant& v,
    const at::Tensor& grad_out,
    const at::Tensor& x,
    at::IntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps) {
  const char* op = v.rms_norm_backward;
  const RowShape shape = check_rms_norm_args(op, x, normalized_shape, weight, eps);
  TORCH_CHECK(
      grad_out.sizes().equals(x.sizes()) && grad_out.device() == x.device(),
      op, ": grad_out must have x's shape and device");
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_w = weight.has_value() ? at::empty(weight->sizes(), weight->options())
                                         : at::empty({0}, x.options());
  const int64_t rows = shape.rows;
  const int64_t cols = shape.cols;
  if (rows == 0 || cols == 0) {
    if (weight.has_value()) {
      grad_w.zero_();
    }
    return {grad_x, grad_w};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spyre_rms_norm_backward", [&] {
    using T = scalar_t;
    using Acc = typename AccOf<T>::type;
    constexpr auto acc_type = c10::CppTypeToScalarType<Acc>::value;
    const at::Tensor xc = x.contiguous();
    const at::Tensor gc = grad_out.to(x.scalar_type()).contiguous();
    // The scale w + offset, once per call (the loops below stay those of the plain op).
    at::Tensor wc;
    if (weight.has_value()) {
      wc = (v.weight_offset != 0.0 ? weight->to(acc_type) + v.weight_offset : weight->to(acc_type)).contiguous();
    }
    const T* xp = xc.const_data_ptr<T>();
    const T* gp = gc.const_data_ptr<T>();
    const Acc* wp = weight.has_value() ? wc.const_data_ptr<Acc>() : nullptr;
    T* gxp = grad_x.data_ptr<T>();
    std::vector<Acc> inv(rows);
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xp + r * cols;
        const T* gr = gp + r * cols;
        Acc sumsq = 0;
        for (int64_t j = 0; j < cols; ++j) {
          const Acc v = static_cast<Acc>(xr[j]);
          sumsq += v * v;
        }
        const Acc s = inverse_rms<T, Acc>(xr, cols, sumsq, eps);
        inv[r] = s;
        // dot = sum_j (g_j * w_j) * xhat_j
        Acc dot = 0;
        for (int64_t j = 0; j < cols; ++j) {
          const Acc gw = static_cast<Acc>(gr[j]) * (wp ? wp[j] : Acc(1));
          dot += gw * static_cast<Acc>(xr[j]) * s;
        }
        const Acc k = dot / static_cast<Acc>(cols);
        for (int64_t j = 0; j < cols; ++j) {
          const Acc gw = static_cast<Acc>(gr[j]) * (wp ? wp[j] : Acc(1));
          const Acc xhat = static_cast<Acc>(xr[j]) * s;
          gxp[r * cols + j] = static_cast<T>(s * (gw - xhat * k));
        }
      }
    });
    if (weight.has_value()) {
      at::Tensor acc = at::empty({cols}, x.options().dtype(acc_type));
      Acc* ap = acc.data_ptr<Acc>();
      at::parallel_for(0, cols, 256, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          ap[j] = 0;
        }
        for (int64_t r = 0; r < rows; ++r) {
          const T* xr = xp + r * cols;
          const T* gr = gp + r * cols;
          for (int64_t j = begin; j < end; ++j) {
            ap[j] += static_cast<Acc>(gr[j]) * static_cast<Acc>(xr[j]) * inv[r];
          }
        }
      });
      grad_w.copy_(acc.view(weight->sizes()));
    }
  });
  return {grad_x, grad_w};
}

}  // namespace spyre_ops::cpu
