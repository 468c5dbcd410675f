"""fp32 sums over long rows and many tokens are as accurate as torch's.

The CPU kernels sum a row in SIMD lanes, in blocks whose sums are added in
double, and a weight-gradient column over the tokens in double. The relative
error (2-norm of the difference over the 2-norm of the float64 result) of the
fp32 outputs must be within 4x of torch's own fp32 error on the same inputs
(F.rms_norm and its autograd backward), at the sizes where unblocked float
sums lose digits: a forward row of 2**26, a backward row of 2**20, and the
weight gradient over 2**20 tokens of 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import spyre_ops

EPS = 1e-6
#: Allowed error, as a multiple of torch's fp32 error on the same input.
FACTOR = 4.0


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref).norm() / ref.norm()).item()


def _chunks(n: int, size: int = 1 << 20) -> range:
    return range(0, n, size)


def _forward_rel_errors(x: torch.Tensor, *ys: torch.Tensor, size: int = 1 << 20) -> list[float]:
    """Relative errors of each y against x / sqrt(mean(x**2) + EPS), in float64,
    a chunk at a time (x of one row)."""
    n = x.shape[-1]
    sumsq = sum(torch.dot(c, c).item() for c in (x[0, s : s + size].double() for s in _chunks(n, size)))
    inv = 1.0 / (sumsq / n + EPS) ** 0.5
    errs = [0.0] * len(ys)
    for s in _chunks(n, size):
        xd = x[0, s : s + size].double()
        for i, y in enumerate(ys):
            d = y[0, s : s + size].double().sub_(xd, alpha=inv)
            errs[i] += torch.dot(d, d).item()
    return [(e / (inv * inv * sumsq)) ** 0.5 for e in errs]


def test_forward_row_of_2_26():
    n = 1 << 26
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    ours, theirs = _forward_rel_errors(x, spyre_ops.rms_norm(x, n, None, EPS), F.rms_norm(x, (n,), None, EPS))
    assert ours <= FACTOR * theirs, (ours, theirs)


def _backward_errors(rows: int, cols: int, seed: int) -> dict[str, tuple[float, float]]:
    """{grad: (our relative error, torch's)} for rms_norm's backward."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    w = 1 + 0.1 * torch.randn(cols, generator=g)
    grad = torch.randn(rows, cols, generator=g)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    F.rms_norm(xd, (cols,), wd, EPS).backward(grad.double())
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    F.rms_norm(xt, (cols,), wt, EPS).backward(grad)
    gx, gw = torch.ops.spyre.rms_norm_backward(grad, x, [cols], w, EPS)
    return {"grad_x": (_rel(gx, xd.grad), _rel(xt.grad, xd.grad)),
            "grad_w": (_rel(gw, wd.grad), _rel(wt.grad, wd.grad))}


def test_backward_row_of_2_20():
    for name, (ours, theirs) in _backward_errors(1, 1 << 20, seed=1).items():
        assert ours <= FACTOR * theirs, (name, ours, theirs)


def test_weight_gradient_over_2_20_tokens():
    ours, theirs = _backward_errors(1 << 20, 16, seed=2)["grad_w"]
    assert ours <= FACTOR * theirs, (ours, theirs)


def test_fused_long_rows_normalize_the_rounded_sum_bit_for_bit():
    # The fp32 fused op sums its squares in one pass, block by block: in the
    # order rms_norm takes them from the sum.
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(3, 50000, generator=g).to(dtype)
        r = torch.randn(3, 50000, generator=g).to(dtype)
        out, total = spyre_ops.fused_add_rms_norm(x, r, 50000, None, EPS)
        assert torch.equal(total, x + r)
        assert torch.equal(out, spyre_ops.rms_norm(total, 50000, None, EPS)), dtype
