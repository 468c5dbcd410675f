"""The emulated device's SEN169 format code (csrc/emulator/sen169.h), exhaustively
against the definition (sen169_reference.py): every code decodes right, every
fp16 and every bf16 value encodes right, and so do the rounding ties, the range
edges, NaN/Inf, -0 and the underflow to zero; every non-NINF code round-trips.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import sen169_reference as ref

from spyre_ops.emulator import _C

ALL_CODES = np.arange(1 << 16, dtype=np.uint16)


def c_decode(codes: np.ndarray) -> np.ndarray:
    return np.frombuffer(_C.sen169_decode(np.ascontiguousarray(codes, dtype=np.uint16).tobytes()), dtype=np.float32)


def c_encode(values: np.ndarray) -> np.ndarray:
    return np.frombuffer(_C.sen169_encode(np.ascontiguousarray(values, dtype=np.float32).tobytes()), dtype=np.uint16)


def f32_bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


def check_encode(values: np.ndarray) -> int:
    """Encodes values (float32) in C++ and by the reference; returns how many were checked."""
    got = c_encode(values)
    wrong = [(float(v), hex(int(g)), hex(ref.encode(float(v)))) for v, g in zip(values, got) if int(g) != ref.encode(float(v))]
    assert not wrong, f"{len(wrong)} of {len(values)} wrong, e.g. (value, got, want) {wrong[:5]}"
    return len(values)


def test_all_65536_codes_decode_to_their_definition():
    got = c_decode(ALL_CODES)
    for code in range(1 << 16):
        want = ref.decode(code)
        g = float(got[code])
        if math.isnan(want):
            assert math.isnan(g), hex(code)
        else:
            assert g == want and math.copysign(1, g) == math.copysign(1, want), (hex(code), g, want)
    # Exactly two NINF codes, two zeros, and 65,532 distinct nonzero finite values.
    assert int(np.isnan(got).sum()) == 2 and int((got == 0).sum()) == 2
    assert len(set(got[np.isfinite(got) & (got != 0)].tolist())) == 65532


def test_round_trip_is_the_identity_on_every_non_ninf_code():
    codes = ALL_CODES[(ALL_CODES & 0x7FFF) != ref.NINF]
    assert len(codes) == 65534
    np.testing.assert_array_equal(c_encode(c_decode(codes)), codes)


def test_every_fp16_value_encodes_right():
    assert check_encode(np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)) == 65536


def test_every_bf16_value_encodes_right():
    bf16 = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    assert check_encode(bf16) == 65536


def ties_and_neighbours() -> np.ndarray:
    """Every exact halfway point between two adjacent codes (fp32: the 14 dropped bits are 1000...0),
    and the fp32 values just below and above it, for every exponent the format reaches and both signs."""
    out = []
    for e_f32 in range(127 - 32, 127 + 34):  # 2^-32 .. 2^34: past both ends of the range
        for m in range(512):
            tie = (e_f32 << 23) | (m << 14) | (1 << 13)
            out += [tie - 1, tie, tie + 1]
    bits = np.array(out, dtype=np.uint32)
    return np.concatenate([bits, bits | 0x80000000]).view(np.float32)


def test_rounding_ties_go_away_from_zero():
    values = ties_and_neighbours()
    assert check_encode(values) == len(values)
    # Two spot checks, by hand: 1 + 1/1024 is halfway between 1 and 1 + 1/512.
    assert int(c_encode(np.array([1 + 2 ** -10], np.float32))[0]) == (31 << 9) | 1
    assert int(c_encode(np.array([-(1 + 2 ** -10)], np.float32))[0]) == 0x8000 | (31 << 9) | 1


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (ref.MAX_FINITE, (63 << 9) | 510),  # largest finite stays
        (2.0 ** 32 * (1 + 510.49 / 512), (63 << 9) | 510),
        (2.0 ** 32 * (1 + 510.5 / 512), ref.NINF),  # rounds past it: NINF
        (3.4e38, ref.NINF),
        (math.inf, ref.NINF),
        (-math.inf, 0x8000 | ref.NINF),
        (math.nan, ref.NINF),
        (-0.0, 0x8000),
        (0.0, 0x0000),
        (ref.MIN_NONZERO, 1),  # smallest nonzero stays
        (2.0 ** -31 * (1 + 0.5 / 512), 1),  # rounds up to it
        (2.0 ** -31 * (1 + 0.49 / 512), 0),  # rounds to the zero code
        (2.0 ** -31, 0),
        (-(2.0 ** -32), 0x8000),  # below the range: -0
        (1e-40, 0),  # fp32 subnormal
        (2.0 ** -30, 1 << 9),
        (65504.0, 47 << 9),  # fp16's max, 2^15 * (1 + 1023/1024), is a tie: up to 2^16
    ],
)
def test_range_edges_nan_inf_and_zero(value, code):
    [got] = c_encode(np.array([value], dtype=np.float32))
    assert int(got) == code, (value, hex(int(got)), hex(code))
    assert int(got) == ref.encode(float(np.float32(value)))


def test_ninf_decodes_to_nan_and_values_beyond_fp16_live_in_the_format():
    [pos, neg] = c_decode(np.array([0x7FFF, 0xFFFF], np.uint16))
    assert math.isnan(pos) and math.isnan(neg)
    assert float(c_decode(c_encode(np.array([1.0e5], np.float32)))[0]) == pytest.approx(1e5, rel=2 ** -10)
    assert float(c_decode(np.array([(63 << 9) | 510], np.uint16))[0]) == ref.MAX_FINITE
    assert struct.pack("<f", ref.MAX_FINITE) == np.float32(ref.MAX_FINITE).tobytes()


def test_the_tensor_rounding_of_the_tests_is_the_definition():
    # sen169_reference.round_tensor (the tests' SEN169 rounding of float64 results) against
    # encode/decode, on random magnitudes over the whole range and on every tie of a binade.
    import torch

    g = torch.Generator().manual_seed(5)
    values = torch.randn(4000, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(-34, 35, (4000,), generator=g).double())
    ties = torch.tensor([(1 + (m + 0.5) / 512) * 2.0 ** k for m in range(0, 512, 37) for k in (-31, 0, 32)],
                        dtype=torch.float64)
    values = torch.cat([values, ties, -ties, torch.tensor([0.0, 2.0 ** -31, ref.MAX_FINITE * (1 + 2.0 ** -11)])])
    got = ref.round_tensor(values)
    want = torch.tensor([ref.decode(ref.encode(float(v))) for v in values], dtype=torch.float64)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got[~torch.isnan(got)], want[~torch.isnan(want)])
