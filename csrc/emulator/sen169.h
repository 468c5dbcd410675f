// SEN169 (IBM's DLFloat16), the number format the Spyre device stores float16
// and bfloat16 tensors in and computes them in: 1 sign, 6 exponent (bias 31)
// and 9 mantissa bits, value (-1)^s * 2^(e-31) * (1 + m/512).
//  * 0x0000 / 0x8000 are +-0 (e = 0, m = 0); e = 0, m >= 1 are the smallest
//    magnitudes (no subnormals);
//  * e = 63, m = 511 (0x7FFF | sign) is the one code for NaN and Inf alike
//    ("NINF"); the largest finite magnitude is 2^32 * (1 + 510/512) ~ 8.57e9.
// Encoding from fp32 rounds half away from zero (half an ulp of the 9-bit
// mantissa added, then truncated); magnitudes that round above the largest
// finite become NINF, those that round below the smallest nonzero become +-0,
// NaN and Inf become NINF. Decoding is exact, except that NINF decodes to NaN:
// the device's own conversion is in IBM's closed runtime, so this is a choice
// (the one place it is made).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>

namespace spyre_ops::emulator::sen169 {

constexpr uint16_t kNinf = 0x7FFF;  // | sign: NaN and Inf

inline uint16_t encode(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {
    return sign | kNinf;
  }
  // fp32 keeps 23 mantissa bits, SEN169 9: add half of the 14 dropped bits'
  // weight (a carry moves into the exponent), then truncate.
  const uint32_t rounded = (magnitude + (1u << 13)) >> 14;  // fp32 exponent << 9 | mantissa
  const int32_t exponent = static_cast<int32_t>(rounded >> 9) - 127 + 31;
  const uint32_t mantissa = rounded & 0x1FFu;
  if (exponent < 0 || (exponent == 0 && mantissa == 0)) {
    return sign;
  }
  if (exponent > 63 || (exponent == 63 && mantissa == 0x1FFu)) {
    return sign | kNinf;
  }
  return sign | static_cast<uint16_t>((static_cast<uint32_t>(exponent) << 9) | mantissa);
}

inline float decode(uint16_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x8000u) << 16;
  const uint32_t exponent = (code >> 9) & 0x3Fu;
  const uint32_t mantissa = code & 0x1FFu;
  uint32_t bits;
  if (exponent == 0 && mantissa == 0) {
    bits = sign;
  } else if (exponent == 63 && mantissa == 0x1FFu) {
    bits = 0x7FC00000u;  // NINF -> NaN (the decode choice above)
  } else {
    bits = sign | ((exponent + 127 - 31) << 23) | (mantissa << 14);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// SEN169 codes (a tensor of 2-byte elements, any strides, any 16-bit dtype:
// only the bits count) decoded to a new contiguous float32 CPU tensor.
at::Tensor decode_tensor(const at::Tensor& codes);

// x (a float32 CPU tensor) encoded into codes (a CPU tensor of 2-byte elements
// of x's shape, any strides).
void encode_into(const at::Tensor& x, const at::Tensor& codes);

}  // namespace spyre_ops::emulator::sen169
