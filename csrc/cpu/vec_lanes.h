// Loading and storing a row in chunks of two accumulator vectors.
//
// Every dtype is processed in chunks of K = 2 * Vectorized<acc>::size() elements,
// held as two Vectorized<acc> registers (acc = float, or double for float64).
// float16/bfloat16 are widened to float on load and rounded once on store.
// A partial chunk (the row's tail) is zero-filled on load and stored partially,
// so a row of any length takes the same code path.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

namespace spyre_ops::cpu {

using at::vec::Vectorized;

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// T stored as itself: float or double.
template <typename T>
struct NativeLanes {
  using V = Vectorized<T>;
  static constexpr int64_t K = 2 * V::size();

  static void load(const T* p, int64_t n, V& a, V& b) {
    if (n >= K) {
      a = V::loadu(p);
      b = V::loadu(p + V::size());
    } else if (n > V::size()) {
      a = V::loadu(p);
      b = V::loadu(p + V::size(), n - V::size());
    } else {
      a = V::loadu(p, n);
      b = V(T(0));
    }
  }
  static void store(T* p, int64_t n, const V& a, const V& b) {
    if (n >= K) {
      a.store(p);
      b.store(p + V::size());
    } else if (n > V::size()) {
      a.store(p);
      b.store(p + V::size(), n - V::size());
    } else {
      a.store(p, n);
    }
  }
  // Stores a, b exactly as they are.
  static void store_exact(T* p, int64_t n, const V& a, const V& b) {
    store(p, n, a, b);
  }
  // s0 += squares of the first half of the whole chunk at p, s1 of the second.
  static void square_add(const T* p, V& s0, V& s1) {
    const V a = V::loadu(p);
    const V b = V::loadu(p + V::size());
    s0 = at::vec::fmadd(a, a, s0);
    s1 = at::vec::fmadd(b, b, s1);
  }
  // A whole chunk at a 64-byte aligned p, bypassing the caches where supported.
  static void store_stream(T* p, const V& a, const V& b) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      _mm512_stream_ps(p, a);
      _mm512_stream_ps(p + V::size(), b);
      return;
    } else if constexpr (std::is_same_v<T, double>) {
      _mm512_stream_pd(p, a);
      _mm512_stream_pd(p + V::size(), b);
      return;
    }
#endif
    store(p, K, a, b);
  }
};

// s0, s1 += squares of the chunk of 2 * Vectorized<float>::size() bfloat16 at p.
// A bfloat16 is the upper half of its float: read as 32-bit lanes, the chunk
// gives its even elements by a left shift and its odd ones by a mask, two
// operations instead of the four of widening it in order (the products are the
// same; only the grouping of the float partial sums differs).
inline void bf16_square_add(const c10::BFloat16* p, Vectorized<float>& s0, Vectorized<float>& s1) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512i v = _mm512_loadu_si512(p);
  const Vectorized<float> even(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  const Vectorized<float> odd(_mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u)))));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const Vectorized<float> even(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  const Vectorized<float> odd(_mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u)))));
#else
  Vectorized<float> even, odd;
  std::tie(even, odd) = at::vec::convert_to_float<c10::BFloat16>(Vectorized<c10::BFloat16>::loadu(p));
#endif
  s0 = at::vec::fmadd(even, even, s0);
  s1 = at::vec::fmadd(odd, odd, s1);
}

// T stored as a 16-bit float, computed in float.
template <typename T>
struct ReducedLanes {
  using V = Vectorized<float>;
  using R = Vectorized<T>;
  static_assert(R::size() == 2 * V::size(), "a 16-bit vector must widen to two float vectors");
  static constexpr int64_t K = R::size();

  static void load(const T* p, int64_t n, V& a, V& b) {
    if (n >= K) {
      widen_whole(p, a, b);
      return;
    }
    std::tie(a, b) = at::vec::convert_to_float<T>(R::loadu(p, n));
  }
  static void store(T* p, int64_t n, const V& a, const V& b) {
    if constexpr (std::is_same_v<T, c10::Half>) {
      if (n >= K) {
        narrow_whole_half(p, a, b);
        return;
      }
    }
    const R r = at::vec::convert_from_float<T>(a, b);
    if (n >= K) {
      r.store(p);
    } else {
      r.store(p, n);
    }
  }
  // a, b = the whole chunk at p as floats, in order. Each half is widened
  // straight from memory (one load-and-widen and, for bfloat16, one shift),
  // where ATen loads the chunk, then splits it.
  static void widen_whole(const T* p, V& a, V& b) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    const auto* q = reinterpret_cast<const char*>(p);
    constexpr int kHalf = K / 2 * sizeof(T);
#endif
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)q)), 16));
      b = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(q + kHalf))), 16));
    } else {
      a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)q));
      b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(q + kHalf)));
    }
#elif defined(CPU_CAPABILITY_AVX2)
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)q)), 16));
      b = _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(q + kHalf))), 16));
    } else {
      a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)q));
      b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(q + kHalf)));
    }
#else
    std::tie(a, b) = at::vec::convert_to_float<T>(R::loadu(p));
#endif
  }
  // Stores a, b rounded to float16 (nearest-even, as ATen's conversion), each
  // half straight from its register.
  static void narrow_whole_half(T* p, const V& a, const V& b) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    auto* q = reinterpret_cast<char*>(p);
    constexpr int kHalf = K / 2 * sizeof(T);
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#endif
#if defined(CPU_CAPABILITY_AVX512)
    _mm256_storeu_si256((__m256i*)q, _mm512_cvtps_ph(a, kNearest));
    _mm256_storeu_si256((__m256i*)(q + kHalf), _mm512_cvtps_ph(b, kNearest));
#elif defined(CPU_CAPABILITY_AVX2)
    _mm_storeu_si128((__m128i*)q, _mm256_cvtps_ph(a, kNearest));
    _mm_storeu_si128((__m128i*)(q + kHalf), _mm256_cvtps_ph(b, kNearest));
#else
    at::vec::convert_from_float<T>(a, b).store(p);
#endif
  }
  // Stores a, b rounded to nearest-even T, subnormals included (store is
  // already exact here; Bf16Lanes's fast store is not).
  static void store_exact(T* p, int64_t n, const V& a, const V& b) {
    store(p, n, a, b);
  }
  // s0, s1 += squares of the whole chunk at p (which lane gets which element
  // is free: only the total matters).
  static void square_add(const T* p, V& s0, V& s1) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      bf16_square_add(p, s0, s1);
    } else {
      V a, b;
      load(p, K, a, b);
      s0 = at::vec::fmadd(a, a, s0);
      s1 = at::vec::fmadd(b, b, s1);
    }
  }
  // A whole chunk at a 64-byte aligned p, bypassing the caches where supported.
  static void store_stream(T* p, const V& a, const V& b) {
    const R r = at::vec::convert_from_float<T>(a, b);
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), r);
#else
    r.store(p);
#endif
  }
};

#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
// bfloat16 with AVX512-BF16: one instruction rounds 32 floats to nearest-even
// (ATen's generic path takes a dozen integer operations). That instruction
// treats float subnormals (|v| < 1.2e-38) as zero. For outputs that is an
// absolute error below 1.2e-38, far below any bfloat16 tolerance, and the hot
// store stays one instruction. The fused op's rounded sum x + residual is an
// input of the normalization and must be exact (x + 0 == x, bf16 subnormals
// included), so a chunk of it holding a subnormal (rare: one mask test per
// chunk) is rounded by ATen's path instead, and every build gives the same sum.
struct Bf16Lanes : ReducedLanes<c10::BFloat16> {
  static __m512i round_fast(const V& a, const V& b) {
    return (__m512i)_mm512_cvtne2ps_pbh(b, a);
  }
  static __m512i round_exact(const V& a, const V& b) {
    constexpr int kDenormal = 0x20;  // the fpclass category of subnormals
    if (C10_UNLIKELY((_mm512_fpclass_ps_mask(a, kDenormal) | _mm512_fpclass_ps_mask(b, kDenormal)) != 0)) {
      return __m512i(at::vec::convert_from_float<c10::BFloat16>(a, b));
    }
    return round_fast(a, b);
  }
  static void store(c10::BFloat16* p, int64_t n, const V& a, const V& b) {
    const __m512i r = round_fast(a, b);
    if (n >= K) {
      _mm512_storeu_si512(p, r);
    } else {
      _mm512_mask_storeu_epi16(p, (__mmask32)((1ull << n) - 1), r);
    }
  }
  static void store_exact(c10::BFloat16* p, int64_t n, const V& a, const V& b) {
    const __m512i r = round_exact(a, b);
    if (n >= K) {
      _mm512_storeu_si512(p, r);
    } else {
      _mm512_mask_storeu_epi16(p, (__mmask32)((1ull << n) - 1), r);
    }
  }
  static void store_stream(c10::BFloat16* p, const V& a, const V& b) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), round_fast(a, b));
  }
};
#endif

#if defined(CPU_CAPABILITY_AVX2) && !defined(CPU_CAPABILITY_AVX512)
// bfloat16 rows on AVX2, which has no instruction to round to bfloat16: whole
// chunks are scaled in their even and odd 16-bit lanes (as bf16_square_add reads
// them), so the rounded halves land in place with one blend, where rounding in
// order (ATen) takes a pack and a permute plus a NaN test per vector. Used with
// a bfloat16 weight or none, so a NaN product can only be a NaN weight's own
// bits (low half zero) or the default NaN: rounding keeps it a NaN without a test.
constexpr bool kBf16EvenOdd = true;

// y[0, 16) = round(x * inv * (w + off)) for one whole chunk (off only when
// kOffset); w may be null (no weight).
template <bool kOffset>
inline void bf16_scale_chunk(
    const c10::BFloat16* x, const c10::BFloat16* w, c10::BFloat16* y, const Vectorized<float>& inv,
    const Vectorized<float>& off) {
  const __m256i high = _mm256_set1_epi32(int(0xffff0000u));
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  __m256 even = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), inv);
  __m256 odd = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), inv);
  if (w != nullptr) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(u, high));
    if constexpr (kOffset) {
      we = _mm256_add_ps(we, off);
      wo = _mm256_add_ps(wo, off);
    }
    even = _mm256_mul_ps(even, we);
    odd = _mm256_mul_ps(odd, wo);
  }
  // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the high half.
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bias = _mm256_set1_epi32(0x7fff);
  const __m256i e = _mm256_castps_si256(even);
  const __m256i o = _mm256_castps_si256(odd);
  const __m256i re = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(e, bias), _mm256_and_si256(_mm256_srli_epi32(e, 16), one)), 16);
  const __m256i ro = _mm256_add_epi32(_mm256_add_epi32(o, bias), _mm256_and_si256(_mm256_srli_epi32(o, 16), one));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), _mm256_blend_epi16(re, ro, 0xaa));
}
#else
constexpr bool kBf16EvenOdd = false;
template <bool kOffset>
inline void bf16_scale_chunk(
    const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*, const Vectorized<float>&, const Vectorized<float>&) {}
#endif

// Makes the streaming stores of this thread visible before it moves on.
inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512)
  _mm_sfence();
#endif
}

// Lanes<T, Acc>: how a T buffer is read into Acc vectors.
template <typename T, typename Acc>
struct Lanes;
template <>
struct Lanes<float, float> : NativeLanes<float> {};
template <>
struct Lanes<double, double> : NativeLanes<double> {};
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
template <>
struct Lanes<c10::BFloat16, float> : Bf16Lanes {};
#else
template <>
struct Lanes<c10::BFloat16, float> : ReducedLanes<c10::BFloat16> {};
#endif
template <>
struct Lanes<c10::Half, float> : ReducedLanes<c10::Half> {};

}  // namespace spyre_ops::cpu
