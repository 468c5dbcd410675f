// The row loop behind every CPU forward kernel: one row is read twice (sum of
// squares, then scale) by one thread, in a fixed order, so results never depend
// on the thread count. (They do depend on the SIMD width the kernels were built
// for, which fixes the order of the float32 partial sums.)
#pragma once

#include <ATen/Parallel.h>

#include <cmath>

#include "vec_lanes.h"

namespace spyre_ops::cpu {

// 1 / sqrt(mean(v^2) + eps) for a row whose sum of squares is `sumsq`.
// When the sum of squares overflowed but every value is finite (|v| > ~1.8e19
// in float), the row is rescaled by its largest magnitude and summed again,
// so huge rows normalize correctly instead of collapsing to zero.
template <typename T, typename Acc>
Acc inverse_rms(const T* row, int64_t cols, Acc sumsq, Acc eps) {
  if (std::isinf(sumsq)) {
    Acc m = 0;
    for (int64_t j = 0; j < cols; ++j) {
      m = std::max(m, std::abs(static_cast<Acc>(row[j])));
    }
    if (std::isfinite(m)) {
      Acc s = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const Acc q = static_cast<Acc>(row[j]) / m;
        s += q * q;
      }
      return Acc(1) / (m * std::sqrt(s / static_cast<Acc>(cols) + (eps / m) / m));
    }
  }
  return Acc(1) / std::sqrt(sumsq / static_cast<Acc>(cols) + eps);
}

// y[r] = src[r] * inverse_rms(src[r]) * w, for rows [0, rows).
// Without a residual, src = x. With one, src = round(x + residual), written to
// residual_out first (which may alias residual; y may alias x).
// w may be null (no weight); W is either T or Acc.
template <typename T, typename W>
void rms_norm_rows(
    const T* x,
    const T* residual,
    T* residual_out,
    const W* w,
    T* y,
    int64_t rows,
    int64_t cols,
    double eps) {
  using Acc = typename AccOf<T>::type;
  using L = Lanes<T, Acc>;
  using LW = Lanes<W, Acc>;
  using V = Vectorized<Acc>;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  const Acc eps_acc = static_cast<Acc>(eps);
  // An output much larger than the caches is written with streaming stores:
  // nothing reads it back soon, and they spare reading each line before writing it.
  constexpr int64_t kStreamBytes = int64_t(16) << 20;
  const bool stream_y = rows * cols * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* src = x + r * cols;
      V s0(Acc(0)), s1(Acc(0));
      V a, b, c, d;
      if (residual != nullptr) {
        const T* rr = residual + r * cols;
        T* ro = residual_out + r * cols;
        for (int64_t j = 0; j < cols; j += L::K) {
          const int64_t n = std::min<int64_t>(L::K, cols - j);
          L::load(src + j, n, a, b);
          L::load(rr + j, n, c, d);
          a = a + c;
          b = b + d;
          L::store_rounded(ro + j, n, a, b);  // the rounded sum is what gets normalized
          s0 = at::vec::fmadd(a, a, s0);
          s1 = at::vec::fmadd(b, b, s1);
        }
        src = ro;
      } else {
        // Four accumulators over two chunks at a time, so the sum is not
        // bound by the latency of one chain of multiply-adds.
        V s2(Acc(0)), s3(Acc(0));
        int64_t j = 0;
        for (; j + 2 * L::K <= cols; j += 2 * L::K) {
          L::load(src + j, L::K, a, b);
          L::load(src + j + L::K, L::K, c, d);
          s0 = at::vec::fmadd(a, a, s0);
          s1 = at::vec::fmadd(b, b, s1);
          s2 = at::vec::fmadd(c, c, s2);
          s3 = at::vec::fmadd(d, d, s3);
        }
        for (; j < cols; j += L::K) {
          const int64_t n = std::min<int64_t>(L::K, cols - j);
          L::load(src + j, n, a, b);
          s0 = at::vec::fmadd(a, a, s0);
          s1 = at::vec::fmadd(b, b, s1);
        }
        s0 = s0 + s2;
        s1 = s1 + s3;
      }
      const Acc sumsq = at::vec::vec_reduce_all<Acc>([](V& p, V& q) { return p + q; }, s0 + s1);
      const V inv(inverse_rms<T, Acc>(src, cols, sumsq, eps_acc));
      T* yr = y + r * cols;
      const bool stream = stream_y && reinterpret_cast<uintptr_t>(yr) % 64 == 0;
      for (int64_t j = 0; j < cols; j += L::K) {
        const int64_t n = std::min<int64_t>(L::K, cols - j);
        L::load(src + j, n, a, b);
        a = a * inv;
        b = b * inv;
        if (w != nullptr) {
          LW::load(w + j, n, c, d);
          a = a * c;
          b = b * d;
        }
        if (stream && n == L::K) {
          L::store_stream(yr + j, a, b);
        } else {
          L::store(yr + j, n, a, b);
        }
      }
    }
    if (stream_y) {
      stream_fence();
    }
  });
}

}  // namespace spyre_ops::cpu
