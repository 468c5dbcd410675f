"""CPU rows outside the fast path's range, after the shared row semantics:
tiny rows (squares underflow), huge rows (squares overflow), eps beyond the
compute dtype's range, Inf/NaN/zero rows, and bf16 subnormals in the fused
residual sum. Every op (rms_norm, rms_norm.out, fused, in-place) is checked
against the float64 reference of tests/reference.py."""

from __future__ import annotations

import pytest
import torch

import spyre_ops
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _all_ops(x, n, w, eps):
    """The result of every op for one input (the fused ones with a zero residual,
    which leaves x unchanged, and with residual = x halves, which sums to x)."""
    results = {"rms_norm": spyre_ops.rms_norm(x, n, w, eps)}
    out = torch.empty_like(x)
    results["out"] = spyre_ops.rms_norm(x, n, w, eps, out=out)
    results["fused"] = spyre_ops.fused_add_rms_norm(x, torch.zeros_like(x), n, w, eps)[0]
    xi, ri = x.clone(), torch.zeros_like(x)
    spyre_ops.fused_add_rms_norm_(xi, ri, n, w, eps)
    results["inplace"] = xi
    return results


def _check_all(x, n, w, eps):
    ref = rms_norm_ref(x, [n], w, eps)
    for name, y in _all_ops(x, n, w, eps).items():
        try:
            assert_close_to_ref(y, ref)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def _tiny_scale(dtype):
    # Values whose squares underflow the compute dtype (float32, or float64).
    return {torch.float32: 1e-30, torch.float16: 2**-20, torch.bfloat16: 1e-39, torch.float64: 1e-200}[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])  # float64: below
@pytest.mark.parametrize("eps", [0.0, 1e-60])
@pytest.mark.parametrize("with_weight", [False, True])
def test_tiny_rows(dtype, eps, with_weight):
    g = torch.Generator().manual_seed(0)
    n = 37
    x = (torch.randn(4, n, generator=g, dtype=torch.float64) * _tiny_scale(dtype)).to(dtype)
    assert (x != 0).sum() > n  # mostly nonzero (a few randn values round to 0)
    w = (torch.rand(n, generator=g) + 0.5).to(dtype) if with_weight else None
    _check_all(x, n, w, eps)


def test_tiny_row_from_the_issue():
    y = spyre_ops.rms_norm(torch.tensor([[1e-30, -1e-30]]), 2, None, 0.0)
    torch.testing.assert_close(y, torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_subnormal_16bit_rows(dtype):
    # Every value a subnormal of the 16-bit dtype.
    tiny = torch.finfo(dtype).tiny
    x = (torch.tensor([[0.5, -0.25, 0.125, 0.75]], dtype=torch.float64) * tiny).to(dtype)
    assert (x.double().abs() < tiny).all() and (x != 0).all()
    _check_all(x, 4, None, 0.0)


@pytest.mark.parametrize("n", [65536, 1 << 20])
def test_huge_rows_are_summed_accurately(n):
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(1, n, generator=g, dtype=torch.float64) * 1e30).float()
    ref = rms_norm_ref(x, [n], None, 1e-5)
    y = spyre_ops.rms_norm(x, n, None, 1e-5)
    rel = ((y.double() - ref).abs() / ref.abs().clamp_min(1e-3)).max().item()
    # The ordinary path reaches <= 7e-7; one rounding to float32 alone costs 6e-8.
    assert rel <= 2e-6, rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_huge_rows_all_ops(dtype):
    big = {torch.float32: 1e30, torch.float16: 6e4, torch.bfloat16: 1e30}[dtype]
    x = (torch.randn(3, 300, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * big)
    x = x.clamp(-torch.finfo(dtype).max, torch.finfo(dtype).max).to(dtype)
    _check_all(x, 300, torch.rand(300).to(dtype) + 0.5, 1e-5)


@pytest.mark.parametrize("scale_exp", [-1000, -600, 600, 1000])
def test_float64_rows_far_from_one_are_scale_invariant(scale_exp):
    # rms_norm(x * 2^k) == rms_norm(x) for eps = 0: checked where x^2 in float64
    # underflows or overflows (x * 2^k still a normal float64, so exact) (the float64 reference itself cannot square these).
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 50, generator=g, dtype=torch.float64)
    scaled = torch.ldexp(x, torch.tensor(scale_exp))
    assert (scaled != 0).all() and scaled.isfinite().all()
    ref = rms_norm_ref(x, [50], None, 0.0)
    for name, y in _all_ops(scaled, 50, None, 0.0).items():
        torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.parametrize("eps", [1e39, 1e300, 3.3e38])
def test_eps_beyond_float32_range(eps):
    x = torch.full((1, 4), 1e30)
    _check_all(x, 4, None, eps)
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(3)) * 1e25
    _check_all(x, 16, None, eps)


def test_eps_from_the_issue():
    y = spyre_ops.rms_norm(torch.full((1, 4), 1e30), 4, None, 1e39)
    torch.testing.assert_close(y, torch.ones(1, 4), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-60, 1e39])
def test_special_rows(dtype, eps):
    # Inf rows, NaN rows, zero rows, next to ordinary, tiny and huge ones.
    inf, nan = float("inf"), float("nan")
    big = torch.finfo(dtype).max / 2
    rows = [
        [1.0, inf, 2.0, -3.0],
        [1e-30, -inf, inf, 0.0],
        [big, inf, 1.0, 1.0],
        [1.0, nan, 2.0, inf],
        [big, nan, 1e-30, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, -0.0, 0.0, 0.0],
        [1.0, 2.0, 3.0, 4.0],
    ]
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    ref = rms_norm_ref(x, [4], None, eps)
    for name, y in _all_ops(x, 4, None, eps).items():
        # NaN exactly where the reference has NaN, the rest within tolerance.
        assert torch.equal(y.isnan(), ref.isnan()), (name, y, ref)
        assert_close_to_ref(torch.where(ref.isnan(), 0, y), torch.where(ref.isnan(), 0, ref))


@pytest.mark.parametrize("n", [4, 32, 100])
def test_bf16_subnormals_survive_the_fused_sum(n):
    # x + 0 == x bitwise, also for bfloat16 subnormals, on every build.
    tiny = torch.finfo(torch.bfloat16).tiny
    x = (torch.linspace(-0.9, 0.9, n, dtype=torch.float64) * tiny).to(torch.bfloat16).view(1, n)
    assert (x != 0).any()
    _, summed = spyre_ops.fused_add_rms_norm(x, torch.zeros_like(x), n, None, 1e-5)
    assert torch.equal(summed.view(torch.int16), x.view(torch.int16))
    xi, ri = x.clone(), torch.zeros_like(x)
    spyre_ops.fused_add_rms_norm_(xi, ri, n, None, 1e-5)
    assert torch.equal(ri.view(torch.int16), x.view(torch.int16))
    out, _ = spyre_ops.fused_add_rms_norm(x, torch.zeros_like(x), n, None, 0.0)
    assert_close_to_ref(out, fused_add_rms_norm_ref(x, torch.zeros_like(x), [n], None, 0.0)[0])
