"""Edge rows on the Spyre path, on both compute policies, against the float64 reference.

The semantics of a row on the Spyre path: tests/reference.py's, except that a
+-Inf makes the whole row NaN (Spyre's SEN169 format has one NINF code for NaN
and Inf, so the formula treats an Inf as a NaN; the CPU kernels give NaN at the
Inf and 0 elsewhere). An all-zero row gives NaN with eps == 0 and 0 with
eps > 0; every other row comes out within the Spyre tolerance, however small or
large the row or eps (eps below fp16's range, eps / max|x|^2 beyond it).
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close, device_sum, held

import spyre_ops

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
COMPUTE = [torch.float16, torch.float32]
EPS = [0.0, 1e-13, 1e-6, 0.1, 1e30]
HIDDEN = 96


def edge_rows(dtype: torch.dtype) -> torch.Tensor:
    """One row per case, each a random row scaled, or with an Inf or NaN planted."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(HIDDEN, generator=g, dtype=torch.float64)
    base = base / base.abs().max()
    rows = [base * s for s in (1e-30, 1e-7, 1e-3, 1.0, 300.0, 60000.0)]
    rows.append(torch.zeros(HIDDEN, dtype=torch.float64))
    for position, value in ((3, math.inf), (50, -math.inf), (7, math.nan)):
        r = base.clone()
        r[position] = value
        rows.append(r)
    r = base.clone()
    r[1], r[2] = math.inf, math.nan  # NaN wins
    rows.append(r)
    return torch.stack(rows).to(dtype)


def test_the_rows_are_what_they_claim():
    # Guards the data: fp16 holds the 1e-7 row only as subnormals and flushes 1e-30 to 0.
    x = edge_rows(torch.float16).float()
    assert 0 < x[1].abs().max() < torch.finfo(torch.float16).tiny
    assert x[0].abs().max() == 0
    assert torch.isinf(x[7]).sum() == 1 and torch.isnan(x[9]).sum() == 1


def spyre_row_semantics(expected: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reference with every row that holds an Inf made NaN (SEN169's single NINF code)."""
    inf_rows = torch.isinf(x.double()).any(dim=-1, keepdim=True)
    return torch.where(inf_rows, torch.full_like(expected, math.nan), expected)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_rows(spyre_device, dtype, compute, eps):
    x = edge_rows(dtype)
    w = (torch.rand(HIDDEN, generator=torch.Generator().manual_seed(2)) + 0.5).to(dtype)
    xd, wd = x.to(spyre_device), w.to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        y = spyre_ops.rms_norm(xd, HIDDEN, wd, eps)
        y_no_w = spyre_ops.rms_norm(xd, HIDDEN, None, eps)
    # The reference takes what the device holds (fp16 subnormals arrive halved in SEN169).
    x, w = held(xd), held(wd)
    assert_close(y, spyre_row_semantics(rms_norm_ref(x, [HIDDEN], w, eps), x), dtype, compute)
    assert_close(y_no_w, spyre_row_semantics(rms_norm_ref(x, [HIDDEN], None, eps), x), dtype, compute)


@pytest.mark.parametrize("compute", COMPUTE)
def test_inf_row_is_a_nan_row(spyre_device, compute):
    x = torch.ones(2, HIDDEN, dtype=torch.float16)
    x[0, 5] = math.inf
    with spyre_ops.spyre.use_compute_dtype(compute):
        y = spyre_ops.rms_norm(x.to(spyre_device), HIDDEN, None, 1e-6).cpu()
    assert torch.isnan(y[0]).all()
    assert torch.isfinite(y[1]).all()


def test_issue_rows_in_fp16(spyre_device):
    # The rows issue 8 measured: a row of 1e-3 with eps 0.1 (eps / max|x|^2 beyond
    # fp16's range) is 0.00316, not 0; a zero row with eps 1e-13 (below fp16's
    # range) is 0, not NaN; a tiny row with eps 1e-13 is within tolerance.
    x = torch.full((3, HIDDEN), 1e-3, dtype=torch.float16)
    x[1] = 0
    x[2] = 2e-7
    y = spyre_ops.rms_norm(x.to(spyre_device), HIDDEN, None, 0.1).cpu()
    torch.testing.assert_close(y[0].double(), torch.full((HIDDEN,), 1e-3 / math.sqrt(1e-6 + 0.1), dtype=torch.float64),
                               atol=1e-5, rtol=2e-3)
    y = spyre_ops.rms_norm(x.to(spyre_device), HIDDEN, None, 1e-13).cpu()
    assert (y[1] == 0).all()
    assert_close(y, rms_norm_ref(held(x.to(spyre_device)), [HIDDEN], None, 1e-13), torch.float16, torch.float16)


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5, 6, 7])
def test_every_rank(spyre_device, rank, compute):
    shape = [2, 3, 1, 2, 2, 1][: rank - 1] + [64]
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(rank)) * 100).to(torch.float16)
    residual = torch.randn(shape, generator=torch.Generator().manual_seed(rank + 50)).to(torch.float16)
    xd, rd = x.to(spyre_device), residual.to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        y = spyre_ops.rms_norm(xd, 64, None, 1e-6)
        out, summed = spyre_ops.fused_add_rms_norm(xd, rd, 64)
    assert y.shape == x.shape and y.is_contiguous()
    assert_close(y, rms_norm_ref(held(xd), [64], None, 1e-6), torch.float16, compute)
    ref_sum = device_sum(xd, rd)
    torch.testing.assert_close(held(summed).double(), ref_sum, atol=0, rtol=0)
    assert_close(out, rms_norm_ref(ref_sum, [64], None, 1e-5), torch.float16, compute)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_edge_rows(spyre_device, dtype):
    x = edge_rows(dtype)
    residual = torch.zeros_like(x)
    residual[3] = 1.0
    x_dev, r_dev = x.to(spyre_device), residual.to(spyre_device)
    ref_sum = device_sum(x_dev, r_dev)
    spyre_ops.fused_add_rms_norm_(x_dev, r_dev, HIDDEN, None, 1e-13)
    ref_out = rms_norm_ref(ref_sum, [HIDDEN], None, 1e-13)
    torch.testing.assert_close(held(r_dev).double(), ref_sum, atol=0, rtol=0, equal_nan=True)
    assert_close(x_dev, spyre_row_semantics(ref_out, ref_sum), dtype, torch.float16)

