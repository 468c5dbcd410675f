"""CPU kernels against the independent float64 reference (tests/reference.py)."""

from __future__ import annotations

import pytest
import torch
from reference import (
    assert_close_to_ref,
    fused_add_rms_norm_ref,
    rms_norm_ref,
)

import spyre_ops

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# (shape of x, normalized_shape): 1-D, 2-D, 3-D, several trailing dims, widths
# that are and are not multiples of any vector length, and 0-size inputs.
SHAPES = [
    ((33,), (33,)),
    ((7, 4096), (4096,)),
    ((2, 3, 130), (130,)),
    ((2, 5, 3, 7), (3, 7)),
    ((3, 1), (1,)),
    ((0, 64), (64,)),
    ((4, 0), (0,)),
    ((2, 0, 16), (16,)),
]


def make(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_matches_reference(dtype, shape, ns, with_weight):
    x = make(shape, dtype)
    w = make(ns, dtype, seed=1) if with_weight else None
    y = spyre_ops.rms_norm(x, ns, w, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    assert_close_to_ref(y, rms_norm_ref(x, ns, w, 1e-5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_weight_of_another_dtype(dtype, wdtype):
    x = make((5, 300), dtype)
    w = make((300,), wdtype, seed=1)
    y = spyre_ops.rms_norm(x, [300], w)
    assert y.dtype == dtype
    assert_close_to_ref(y, rms_norm_ref(x, [300], w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input(dtype):
    base = make((6, 64, 10), dtype)
    x = base.transpose(1, 2)  # (6, 10, 64), last dim strided
    assert not x.is_contiguous()
    w = make((64,), dtype, seed=1)
    assert_close_to_ref(spyre_ops.rms_norm(x, [64], w), rms_norm_ref(x, [64], w))
    sliced = make((8, 200), dtype)[::2, 3:131]
    assert_close_to_ref(spyre_ops.rms_norm(sliced, [128]), rms_norm_ref(sliced, [128]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_fused_add_rms_norm(dtype, with_weight):
    x, r = make((9, 515), dtype), make((9, 515), dtype, seed=2)
    w = make((515,), torch.float32, seed=1) if with_weight else None
    x0, r0 = x.clone(), r.clone()
    out, summed = spyre_ops.fused_add_rms_norm(x, r, [515], w, 1e-6)
    ref_out, ref_sum = fused_add_rms_norm_ref(x, r, [515], w, 1e-6)
    # The sum is taken in fp32 (exact for these dtypes' sums) and rounded once.
    assert torch.equal(summed, ref_sum)
    assert_close_to_ref(out, ref_out)
    assert torch.equal(x, x0) and torch.equal(r, r0), "the functional op must not mutate"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 31, 32, 33, 64, 100, 515, 4096])
@pytest.mark.parametrize("wdtype", [None, "same", torch.float32])
def test_fused_normalizes_its_sum_exactly_as_rms_norm(dtype, cols, wdtype):
    # The fused op's output is rms_norm of its rounded sum, bit for bit (one
    # summation order for the squares, whatever the row length).
    x, r = make((5, cols), dtype, seed=3), make((5, cols), dtype, seed=4)
    w = None if wdtype is None else make((cols,), dtype if wdtype == "same" else wdtype, seed=5)
    out, summed = spyre_ops.fused_add_rms_norm(x, r, cols, w, 1e-6)
    assert torch.equal(out, spyre_ops.rms_norm(summed, cols, w, 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm_inplace(dtype):
    x, r = make((4, 3, 96), dtype), make((4, 3, 96), dtype, seed=2)
    w = make((96,), dtype, seed=1)
    expected_out, expected_sum = spyre_ops.fused_add_rms_norm(x, r, [96], w)
    xp, rp = x.data_ptr(), r.data_ptr()
    assert spyre_ops.fused_add_rms_norm_(x, r, [96], w) is None
    assert x.data_ptr() == xp and r.data_ptr() == rp
    assert torch.equal(x, expected_out) and torch.equal(r, expected_sum)


def test_fused_add_rms_norm_inplace_non_contiguous():
    x = make((96, 8), torch.float32).t()  # (8, 96), not contiguous
    r = make((8, 96), torch.float32, seed=2)
    expected_out, expected_sum = spyre_ops.fused_add_rms_norm(x, r, [96])
    spyre_ops.fused_add_rms_norm_(x, r, [96])
    assert not x.is_contiguous()
    assert torch.equal(x, expected_out) and torch.equal(r, expected_sum)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_magnitudes(dtype):
    # Rows at the edges of each dtype's range, including rows whose squares
    # overflow float32 (bf16 holds up to 3.4e38): accumulate-and-rescue must
    # still give the float64 answer.
    finfo = torch.finfo(dtype)
    scales = [1e-3, 300.0, 3000.0, float(finfo.max) / 4]
    if dtype != torch.float16:
        scales.append(1e25)
    for scale in scales:
        x = make((3, 512), torch.float64, scale=scale).clamp(-finfo.max, finfo.max).to(dtype)
        y = spyre_ops.rms_norm(x, [512])
        assert torch.isfinite(y).all(), scale
        assert_close_to_ref(y, rms_norm_ref(x, [512]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_like_reference(dtype):
    x = make((5, 70), dtype)
    x[0, 3] = float("nan")
    x[1, 5] = float("inf")
    x[2, 0] = float("-inf")
    x[3] = 0  # all-zero row: 0 / sqrt(eps) = 0
    y = spyre_ops.rms_norm(x, [70])
    ref = rms_norm_ref(x, [70])
    # Same NaN pattern and same finite values as float64.
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert_close_to_ref(y, ref)
    # eps = 0 on an all-zero row: 0 / 0 is NaN in float64 too.
    y0 = spyre_ops.rms_norm(torch.zeros(2, 8, dtype=dtype), [8], eps=0.0)
    assert torch.isnan(rms_norm_ref(torch.zeros(2, 8), [8], eps=0.0)).all()
    assert torch.isnan(y0).all()


def test_results_do_not_depend_on_thread_count():
    x = make((257, 2048), torch.bfloat16)
    w = make((2048,), torch.float32, seed=1)
    r = make((257, 2048), torch.bfloat16, seed=2)
    xg = make((64, 300), torch.float32).requires_grad_()
    wg = make((300,), torch.float32, seed=3).requires_grad_()
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = spyre_ops.rms_norm(x, [2048], w)
            o, s = spyre_ops.fused_add_rms_norm(x, r, [2048], w)
            gx, gw = torch.autograd.grad(spyre_ops.rms_norm(xg, [300], wg).square().sum(), (xg, wg))
            results.append((y, o, s, gx, gw))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)
