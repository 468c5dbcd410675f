// The row loop behind every CPU forward kernel: one row is read twice (sum of
// squares, then scale) by one thread, in a fixed order, so results never depend
// on the thread count. (They do depend on the SIMD width the kernels were built
// for, which fixes the order of the float32 partial sums.) Rows are found through
// a RowLayout: any strides of the leading dims, each row contiguous.
#pragma once

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "row_layout.h"
#include "vec_lanes.h"

namespace spyre_ops::cpu {

// The range of sums of squares the fast path handles exactly: below `low`,
// squares of the row's values may have underflowed (or the row is zero);
// above `high`, they may have overflowed (or are Inf/NaN), or adding eps may.
template <typename Acc>
struct FastRange;
template <>
struct FastRange<float> {
  static constexpr float low = 1e-20f;
  static constexpr float high = 3.4e38f / 4;
};
template <>
struct FastRange<double> {
  static constexpr double low = 1e-280;
  static constexpr double high = 1.7e308 / 4;
};

// Whether a row with sum of squares `sumsq` must take the exact (slow) path:
// one predictable comparison pair, false for every ordinary row.
template <typename Acc>
inline bool needs_exact_path(Acc sumsq) {
  return !(sumsq >= FastRange<Acc>::low && sumsq <= FastRange<Acc>::high);
}

// Whether eps itself is outside what the fast path can add in Acc.
template <typename Acc>
inline bool eps_needs_exact_path(double eps) {
  return eps > static_cast<double>(FastRange<Acc>::high);
}

// The exact path for one row, in double, after the shared row semantics:
// a NaN makes the whole row NaN; an Inf gives NaN there and 0 elsewhere; a
// zero row gives NaN with eps == 0, else 0. Otherwise the row and eps are
// scaled by c = max(max|v|, sqrt(eps)) before squaring, so nothing overflows
// or underflows whatever the magnitudes. Returns (c, r) with
// y[j] = (v[j] / c) * r * w[j]; for the special rows c = 1 and r is NaN or 0.
template <typename T>
C10_NOINLINE std::pair<double, double> exact_row_scale(const T* row, int64_t cols, double eps) {
  double m = 0;
  bool nan = false;
  for (int64_t j = 0; j < cols; ++j) {
    const double v = std::abs(static_cast<double>(row[j]));
    nan |= std::isnan(v);
    m = std::max(m, v);
  }
  const double quiet_nan = std::numeric_limits<double>::quiet_NaN();
  if (nan) {
    return {1.0, quiet_nan};
  }
  if (std::isinf(m)) {
    return {1.0, 0.0};  // v * 0: NaN at the Infs, 0 elsewhere
  }
  const double c = std::max(m, std::sqrt(eps));
  if (c == 0) {
    return {1.0, quiet_nan};  // all zeros and eps == 0: 0 / 0
  }
  // Four sums, so the rounding error does not grow with one long chain.
  double s[4] = {0, 0, 0, 0};
  for (int64_t j = 0; j < cols; ++j) {
    const double q = static_cast<double>(row[j]) / c;
    s[j & 3] += q * q;
  }
  const double sum = (s[0] + s[1]) + (s[2] + s[3]);
  return {c, 1.0 / std::sqrt(sum / static_cast<double>(cols) + (eps / c) / c)};
}

// 1 / sqrt(mean(v^2) + eps) for a row whose sum of squares is `sumsq`
// (computed in Acc); rows outside the fast range go through exact_row_scale.
template <typename T, typename Acc>
Acc inverse_rms(const T* row, int64_t cols, Acc sumsq, double eps) {
  if (needs_exact_path(sumsq) || eps_needs_exact_path<Acc>(eps)) {
    const auto [c, r] = exact_row_scale(row, cols, eps);
    return static_cast<Acc>(r / c);
  }
  return Acc(1) / std::sqrt(sumsq / static_cast<Acc>(cols) + static_cast<Acc>(eps));
}

// Writes y = v * inverse_rms(v) * (w + w_offset) for one row through the exact
// path, in double, rounded once to T; the offset weight is taken in Acc, as the
// fast path takes it. Out of line: the hot row loop stays as small as it was
// without it.
template <typename T, typename W, typename Acc>
C10_NOINLINE void normalize_row_exact(const T* row, const W* w, T* y, int64_t cols, double eps, Acc w_offset) {
  const auto [c, r] = exact_row_scale(row, cols, eps);
  for (int64_t j = 0; j < cols; ++j) {
    const double v = static_cast<double>(row[j]) / c * r;
    if (w == nullptr) {
      y[j] = static_cast<T>(v);
    } else if (w_offset == Acc(0)) {
      y[j] = static_cast<T>(v * static_cast<double>(w[j]));
    } else {
      y[j] = static_cast<T>(v * static_cast<double>(static_cast<Acc>(w[j]) + w_offset));
    }
  }
}

// Rows longer than kSumBlock elements are summed in blocks of kSumBlock: each
// block in the SIMD accumulators, as a row of kSumBlock would be, and the block
// sums added in double. The rounding error of a long float sum then grows as
// that of one block (a few hundred additions per lane), not with the row's
// length, and a row of up to kSumBlock elements is summed exactly as before
// (one block, its sum rounded to Acc and back unchanged).
constexpr int64_t kSumBlock = 8192;

// block(j, n): the sum over elements [j, j + n) of a row, in Acc; n is
// kSumBlock for all blocks but the last, which ends the row.
template <typename Acc, typename Block>
Acc blocked_sum(int64_t cols, const Block& block) {
  if (C10_LIKELY(cols <= kSumBlock)) {
    return block(int64_t(0), cols);
  }
  double total = 0;
  int64_t j = 0;
  for (; cols - j > kSumBlock; j += kSumBlock) {
    total += static_cast<double>(block(j, kSumBlock));
  }
  total += static_cast<double>(block(j, cols - j));
  return static_cast<Acc>(total);
}

// Sum of squares of one block of a row, in four accumulators over two chunks at
// a time (so the sum is not bound by the latency of one chain of multiply-adds);
// whole chunks without tail checks, then at most one partial chunk.
template <typename T, typename Acc>
Acc sum_squares(const T* src, int64_t cols) {
  using L = Lanes<T, Acc>;
  using V = Vectorized<Acc>;
  static_assert(kSumBlock % (2 * L::K) == 0, "a block must be whole chunk pairs");
  V s0(Acc(0)), s1(Acc(0)), s2(Acc(0)), s3(Acc(0));
  int64_t j = 0;
  for (; j + 2 * L::K <= cols; j += 2 * L::K) {
    L::square_add(src + j, s0, s1);
    L::square_add(src + j + L::K, s2, s3);
  }
  for (; j < cols; j += L::K) {
    V a, b;
    L::load(src + j, std::min<int64_t>(L::K, cols - j), a, b);
    s0 = at::vec::fmadd(a, a, s0);
    s1 = at::vec::fmadd(b, b, s1);
  }
  return at::vec::vec_reduce_all<Acc>([](V& p, V& q) { return p + q; }, (s0 + s2) + (s1 + s3));
}

// residual_out = round(x + residual) for one row (summed in Acc, rounded once,
// subnormals exactly): whole chunks without tail checks, then at most one
// partial chunk. residual_out may be residual itself. Out of line (one call
// per row), which also lets tools/loop_instructions.py find its loop.
template <typename T, typename Acc>
C10_NOINLINE void add_row(const T* x, const T* residual, T* residual_out, int64_t cols) {
  using L = Lanes<T, Acc>;
  using V = Vectorized<Acc>;
  V a, b, c, d;
  int64_t j = 0;
  for (; j + L::K <= cols; j += L::K) {
    L::load(x + j, L::K, a, b);
    L::load(residual + j, L::K, c, d);
    L::store_exact(residual_out + j, L::K, a + c, b + d);
  }
  if (j < cols) {
    L::load(x + j, cols - j, a, b);
    L::load(residual + j, cols - j, c, d);
    L::store_exact(residual_out + j, cols - j, a + c, b + d);
  }
}

// Sum of squares of a whole row, in blocks (blocked_sum).
template <typename T, typename Acc>
Acc row_sum_squares(const T* src, int64_t cols) {
  return blocked_sum<Acc>(cols, [src](int64_t j, int64_t n) { return sum_squares<T, Acc>(src + j, n); });
}

// float/double: sum of squares of one block of round(x + residual), written to
// residual_out, in one pass: the squares from the registers (the sum is stored
// as it is), with sum_squares' accumulators, chunk pairs and tail.
template <typename T, typename Acc>
Acc add_sum_squares(const T* x, const T* residual, T* residual_out, int64_t cols) {
  static_assert(std::is_same_v<T, Acc>);
  using L = Lanes<T, Acc>;
  using V = Vectorized<Acc>;
  V s0(Acc(0)), s1(Acc(0)), s2(Acc(0)), s3(Acc(0));
  V a, b, c, d;
  auto add = [&](int64_t j, int64_t n) {
    L::load(x + j, n, a, b);
    L::load(residual + j, n, c, d);
    a = a + c;
    b = b + d;
    L::store_exact(residual_out + j, n, a, b);
  };
  int64_t j = 0;
  for (; j + 2 * L::K <= cols; j += 2 * L::K) {
    add(j, L::K);
    s0 = at::vec::fmadd(a, a, s0);
    s1 = at::vec::fmadd(b, b, s1);
    add(j + L::K, L::K);
    s2 = at::vec::fmadd(a, a, s2);
    s3 = at::vec::fmadd(b, b, s3);
  }
  for (; j < cols; j += L::K) {
    add(j, std::min<int64_t>(L::K, cols - j));
    s0 = at::vec::fmadd(a, a, s0);
    s1 = at::vec::fmadd(b, b, s1);
  }
  return at::vec::vec_reduce_all<Acc>([](V& p, V& q) { return p + q; }, (s0 + s2) + (s1 + s3));
}

// Sum of squares of one row of round(x + residual), written to residual_out
// (the rounded sum is what gets normalized), in the same order as
// row_sum_squares would take it from residual_out, so that the fused op
// normalizes its sum bit for bit as rms_norm would normalize it:
// * float/double: in one pass per block (add_sum_squares);
// * 16-bit: the rounded sum is written first, then read back (from L1) by
//   row_sum_squares itself. The second read costs less than squaring values
//   rounded in registers would (these rows are bound by instructions, and
//   sum_squares reads 16-bit lanes with two instructions per 32 elements),
//   where the float rows, bound by cache traffic, would lose by it.
template <typename T, typename Acc>
Acc row_add_sum_squares(const T* x, const T* residual, T* residual_out, int64_t cols) {
  if constexpr (!std::is_same_v<T, Acc>) {
    add_row<T, Acc>(x, residual, residual_out, cols);
    return row_sum_squares<T, Acc>(residual_out, cols);
  } else {
    return blocked_sum<Acc>(cols, [=](int64_t j, int64_t n) {
      return add_sum_squares<T, Acc>(x + j, residual + j, residual_out + j, n);
    });
  }
}

// yr = src * inv * (w + w_offset) (w may be null: no weight), whole chunks first,
// then at most one partial chunk. kStream: whole chunks with streaming stores
// (yr 64-byte aligned). kOffset: the weight is offset (one add in Acc per vector),
// else w_offset is ignored.
template <bool kStream, bool kOffset, typename T, typename W, typename Acc>
void scale_row(const T* src, const W* w, T* yr, int64_t cols, Acc inv_rms, Acc w_offset) {
  using L = Lanes<T, Acc>;
  using LW = Lanes<W, Acc>;
  using V = Vectorized<Acc>;
  const V inv(inv_rms);
  const V off(w_offset);
  V a, b, c, d;
  auto offset = [&]() {
    if constexpr (kOffset) {
      c = c + off;
      d = d + off;
    }
  };
  auto store = [&](int64_t j, int64_t n) {
    if (kStream && n == L::K) {
      L::store_stream(yr + j, a, b);
    } else {
      L::store(yr + j, n, a, b);
    }
  };
  int64_t j = 0;
  if (w != nullptr) {
    if constexpr (kBf16EvenOdd && std::is_same_v<T, c10::BFloat16> && std::is_same_v<W, c10::BFloat16>) {
      for (; j + L::K <= cols; j += L::K) {
        bf16_scale_chunk<kOffset>(src + j, w + j, yr + j, inv, off);
      }
    }
    for (; j + L::K <= cols; j += L::K) {
      L::load(src + j, L::K, a, b);
      LW::load(w + j, L::K, c, d);
      offset();
      a = a * inv * c;
      b = b * inv * d;
      store(j, L::K);
    }
    if (j < cols) {
      L::load(src + j, cols - j, a, b);
      LW::load(w + j, cols - j, c, d);
      offset();
      a = a * inv * c;
      b = b * inv * d;
      store(j, cols - j);
    }
  } else {
    if constexpr (kBf16EvenOdd && std::is_same_v<T, c10::BFloat16>) {
      for (; j + L::K <= cols; j += L::K) {
        bf16_scale_chunk<false>(src + j, nullptr, yr + j, inv, off);
      }
    }
    for (; j + L::K <= cols; j += L::K) {
      L::load(src + j, L::K, a, b);
      a = a * inv;
      b = b * inv;
      store(j, L::K);
    }
    if (j < cols) {
      L::load(src + j, cols - j, a, b);
      a = a * inv;
      b = b * inv;
      store(j, cols - j);
    }
  }
}

// One row: y = src * inverse_rms(src) * (w + w_offset), where src = x, or
// round(x + residual) written to residual_out first when there is a residual.
// Arguments by value, so that the loops keep them in registers.
template <typename T, typename W, typename Acc = typename AccOf<T>::type>
void rms_norm_row(
    const T* x, const T* residual, T* residual_out, const W* w, T* y, int64_t cols, double eps, bool stream,
    Acc w_offset) {
  const T* src = x;
  Acc sumsq;
  if (residual != nullptr) {
    sumsq = row_add_sum_squares<T, Acc>(x, residual, residual_out, cols);
    src = residual_out;
  } else {
    sumsq = row_sum_squares<T, Acc>(x, cols);
  }
  if (C10_UNLIKELY(needs_exact_path(sumsq) || eps_needs_exact_path<Acc>(eps))) {
    normalize_row_exact(src, w, y, cols, eps, w_offset);
    return;
  }
  const Acc inv = Acc(1) / std::sqrt(sumsq / static_cast<Acc>(cols) + static_cast<Acc>(eps));
  const bool streamed = stream && reinterpret_cast<uintptr_t>(y) % 64 == 0;
  if (w != nullptr && w_offset != Acc(0)) {
    streamed ? scale_row<true, true>(src, w, y, cols, inv, w_offset)
             : scale_row<false, true>(src, w, y, cols, inv, w_offset);
  } else {
    streamed ? scale_row<true, false>(src, w, y, cols, inv, w_offset)
             : scale_row<false, false>(src, w, y, cols, inv, w_offset);
  }
}

// y[r] = src[r] * inverse_rms(src[r]) * (w + weight_offset), for rows [0, rows).
// Without a residual, src = x. With one, src = round(x + residual), written to
// residual_out first (which may alias residual; y may alias x).
// w may be null (no weight, no scale); W is either T or Acc. The offset is
// added to each weight element in Acc (Gemma's 1 + w: weight_offset = 1).
// Row r of x, residual, residual_out and y starts at the offsets rows_at gives
// it in slots 0-3.
template <typename T, typename W>
void rms_norm_rows(
    const T* x,
    const T* residual,
    T* residual_out,
    const W* w,
    T* y,
    const RowLayout& rows_at,
    int64_t rows,
    int64_t cols,
    double eps,
    double weight_offset = 0.0) {
  using Acc = typename AccOf<T>::type;
  const Acc w_offset = static_cast<Acc>(weight_offset);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  // An output much larger than the caches is written with streaming stores:
  // nothing reads it back soon, and they spare reading each line before writing it.
  constexpr int64_t kStreamBytes = int64_t(16) << 20;
  const bool stream_y = rows * cols * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
  at::parallel_for(0, rows, grain, [=, &rows_at](int64_t begin, int64_t end) {
    rows_at.for_rows(begin, end, [=](int64_t, const RowLayout::Offsets& o) {
      rms_norm_row<T, W>(
          x + o[0], residual ? residual + o[1] : nullptr, residual ? residual_out + o[2] : nullptr, w, y + o[3],
          cols, eps, stream_y, w_offset);
    });
    if (stream_y) {
      stream_fence();
    }
  });
}

}  // namespace spyre_ops::cpu
