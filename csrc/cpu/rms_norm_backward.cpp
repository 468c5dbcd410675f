// CPU kernel of rms_norm_backward: rows in parallel for grad_x and columns in
// parallel for grad_weight, so neither depends on the thread count. Rows are
// read where they are (any leading strides, each row contiguous). The sums
// are as accurate as torch's: a row's sums in SIMD lanes, in blocks
// (blocked_sum: the sum of squares is the forward's own), and the weight
// gradient's column sums over the rows in double, of products taken in double.
// The family's weight offset (variants.h) enters grad_x only, through the scale
// w + offset; grad_weight is the same for every offset.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../checks.h"
#include "kernels.h"
#include "rms_norm_rows.h"
#include "row_layout.h"

namespace spyre_ops::cpu {
namespace {

// sum_j g[j] * w[j] * x[j] over one block (w may be null: no weight), in two
// accumulators, a chunk at a time.
template <typename T, typename Acc>
Acc weighted_dot(const T* g, const Acc* w, const T* x, int64_t n) {
  using L = Lanes<T, Acc>;
  using LW = Lanes<Acc, Acc>;
  using V = Vectorized<Acc>;
  V s0(Acc(0)), s1(Acc(0));
  for (int64_t j = 0; j < n; j += L::K) {
    const int64_t m = std::min<int64_t>(L::K, n - j);
    V a, b, c, d;
    L::load(g + j, m, a, b);
    L::load(x + j, m, c, d);
    if (w != nullptr) {
      V e, f;
      LW::load(w + j, m, e, f);
      a = a * e;
      b = b * f;
    }
    s0 = at::vec::fmadd(a, c, s0);
    s1 = at::vec::fmadd(b, d, s1);
  }
  return at::vec::vec_reduce_all<Acc>([](V& p, V& q) { return p + q; }, s0 + s1);
}

}  // namespace

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
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spyre_rms_norm_backward", [&] {
    using T = scalar_t;
    using Acc = typename AccOf<T>::type;
    constexpr auto acc_type = c10::CppTypeToScalarType<Acc>::value;
    const at::Tensor xc = with_contiguous_rows(x, nd);
    const at::Tensor gc = with_contiguous_rows(grad_out.to(x.scalar_type()), nd);
    // The scale w + offset, once per call (the loops below stay those of the plain op).
    at::Tensor wc;
    if (weight.has_value()) {
      wc = (v.weight_offset != 0.0 ? weight->to(acc_type) + v.weight_offset : weight->to(acc_type)).contiguous();
    }
    const RowLayout rows_at({&xc, &gc, &grad_x}, nd);
    const T* xp = xc.const_data_ptr<T>();
    const T* gp = gc.const_data_ptr<T>();
    const Acc* wp = weight.has_value() ? wc.const_data_ptr<Acc>() : nullptr;
    T* gxp = grad_x.data_ptr<T>();
    std::vector<Acc> inv(rows);
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / cols), [&](int64_t begin, int64_t end) {
      rows_at.for_rows(begin, end, [&](int64_t r, const RowLayout::Offsets& o) {
        const T* xr = xp + o[0];
        const T* gr = gp + o[1];
        T* gx = gxp + o[2];
        const Acc sumsq = row_sum_squares<T, Acc>(xr, cols);
        const Acc s = inverse_rms<T, Acc>(xr, cols, sumsq, eps);
        inv[r] = s;
        // k = mean_j (g_j * w_j) * xhat_j, xhat_j = x_j * s
        const Acc dot = blocked_sum<Acc>(cols, [&](int64_t j, int64_t n) {
          return weighted_dot<T, Acc>(gr + j, wp ? wp + j : nullptr, xr + j, n);
        });
        const Acc k = dot * s / static_cast<Acc>(cols);
        for (int64_t j = 0; j < cols; ++j) {
          const Acc gw = static_cast<Acc>(gr[j]) * (wp ? wp[j] : Acc(1));
          const Acc xhat = static_cast<Acc>(xr[j]) * s;
          gx[j] = static_cast<T>(s * (gw - xhat * k));
        }
      });
    });
    if (weight.has_value()) {
      // grad_w[j] = sum_r g[r, j] * x[r, j] * inv[r]: each column over the rows
      // in order, in double, rounded once to weight's dtype.
      at::Tensor acc = at::empty({cols}, x.options().dtype(at::kDouble));
      double* ap = acc.data_ptr<double>();
      at::parallel_for(0, cols, 256, [&](int64_t begin, int64_t end) {
        double* a = ap + begin;
        const int64_t n = end - begin;
        for (int64_t j = 0; j < n; ++j) {
          a[j] = 0;
        }
        rows_at.for_rows(0, rows, [&](int64_t r, const RowLayout::Offsets& o) {
          const T* xr = xp + o[0] + begin;
          const T* gr = gp + o[1] + begin;
          const double s = static_cast<double>(inv[r]);
          for (int64_t j = 0; j < n; ++j) {
            a[j] += static_cast<double>(static_cast<Acc>(gr[j])) * static_cast<double>(static_cast<Acc>(xr[j])) * s;
          }
        });
      });
      grad_w.copy_(acc.view(weight->sizes()));
    }
  });
  return {grad_x, grad_w};
}

}  // namespace spyre_ops::cpu
