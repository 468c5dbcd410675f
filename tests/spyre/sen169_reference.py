"""SEN169 (DLFloat16) by its definition, in plain Python: the reference the
emulated device's C++ format code is tested against (test_sen169_format.py).

Written from the definition, not from the C++ (which works on fp32 bit fields):
a code is (sign, 6-bit exponent e, 9-bit mantissa m), value
(-1)^s * 2^(e-31) * (1 + m/512); (e=0, m=0) is +-0; (e=63, m=511) is NINF, the
one code for NaN and Inf, decoded to NaN. Encoding rounds the exact value to
the nearest code, ties away from zero; what rounds past the largest finite
magnitude is NINF, what rounds below the smallest nonzero one is +-0.
"""

from __future__ import annotations

import math

BIAS = 31
NINF = 0x7FFF
MAX_FINITE = 2.0 ** 32 * (1 + 510 / 512)
MIN_NONZERO = 2.0 ** -31 * (1 + 1 / 512)


def decode(code: int) -> float:
    """The value of a 16-bit SEN169 code (NaN for NINF)."""
    s, e, m = code >> 15, (code >> 9) & 63, code & 511
    if e == 63 and m == 511:
        return math.nan
    if e == 0 and m == 0:
        return -0.0 if s else 0.0
    return (-1.0) ** s * 2.0 ** (e - BIAS) * (1 + m / 512)


def encode(value: float) -> int:
    """The SEN169 code of a (double) value: round half away from zero on the 9-bit mantissa."""
    sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
    if math.isnan(value) or math.isinf(value):
        return sign | NINF
    a = abs(value)
    if a == 0:
        return sign
    frac, exp = math.frexp(a)  # a = frac * 2^exp, frac in [0.5, 1)
    e = exp - 1  # a = 2^e * (1 + f), f in [0, 1)
    scaled = (a / 2.0 ** e - 1) * 512  # exact in double for fp32 inputs
    m = math.floor(scaled + 0.5)  # on the magnitude: half away from zero
    if m == 512:
        m, e = 0, e + 1
    code_e = e + BIAS
    if code_e > 63 or (code_e == 63 and m == 511):
        return sign | NINF
    if code_e < 0 or (code_e == 0 and m == 0):
        return sign
    return sign | (code_e << 9) | m


def round_tensor(t):
    """Every element of t rounded to the nearest SEN169 value as encode/decode above do (ties away
    from zero, past the largest finite to NaN, below the smallest nonzero to 0), in float64: what
    the device holds after one op whose exact result is t."""
    import torch

    t = t.double()
    _, exp = torch.frexp(t)
    ulp = torch.ldexp(torch.ones_like(t), (exp - 10).to(torch.int32))  # 2^(e - 9) for |t| in [2^e, 2^(e+1))
    r = torch.copysign(torch.floor(t.abs() / ulp + 0.5) * ulp, t)
    r = torch.where(r.abs() > MAX_FINITE, torch.full_like(r, math.nan), r)
    r = torch.where(r.abs() < MIN_NONZERO, torch.zeros_like(r), r)
    return torch.where(torch.isfinite(t), r, torch.full_like(r, math.nan))
