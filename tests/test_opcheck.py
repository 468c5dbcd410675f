"""torch.library.opcheck (schema, autograd registration, fake tensor, AOT dispatch)
on every op over a sample set of inputs."""

from __future__ import annotations

import pytest
import torch

import spyre_ops  # noqa: F401

ops = torch.ops.spyre

# (shape of x, normalized_shape, make x non-contiguous)
CASES = [
    ((16,), (16,), False),
    ((3, 40), (40,), False),
    ((2, 3, 24), (24,), False),
    ((2, 4, 5), (4, 5), False),
    ((0, 32), (32,), False),
    ((5, 48), (48,), True),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def make_x(shape, dtype, non_contiguous, requires_grad=False):
    if non_contiguous:
        x = torch.randn(*reversed(shape), dtype=dtype).t()
        assert not x.is_contiguous()
    else:
        x = torch.randn(shape, dtype=dtype)
    return x.requires_grad_(requires_grad)


def case_id(case):
    shape, ns, nc = case
    return f"x{list(shape)}-ns{list(ns)}" + ("-noncontig" if nc else "")


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "noweight"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_functional(case, dtype, with_weight, requires_grad):
    shape, ns, nc = case
    x = make_x(shape, dtype, nc, requires_grad)
    w = torch.randn(ns, dtype=dtype, requires_grad=requires_grad) if with_weight else None
    torch.library.opcheck(ops.rms_norm.default, (x, list(ns), w, 1e-6))
    r = torch.randn(x.shape, dtype=dtype, requires_grad=requires_grad)
    torch.library.opcheck(ops.fused_add_rms_norm.default, (x, r, list(ns), w, 1e-6))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "noweight"])
def test_opcheck_inplace(case, dtype, with_weight):
    shape, ns, nc = case
    x = make_x(shape, dtype, nc)
    r = torch.randn(x.shape, dtype=dtype)
    w = torch.randn(ns, dtype=dtype) if with_weight else None
    torch.library.opcheck(ops.fused_add_rms_norm_.default, (x, r, list(ns), w, 1e-6))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "noweight"])
def test_opcheck_backward(case, with_weight):
    shape, ns, nc = case
    x = make_x(shape, torch.float32, nc)
    g = torch.randn(x.shape)
    w = torch.randn(ns) if with_weight else None
    torch.library.opcheck(ops.rms_norm_backward.default, (g, x, list(ns), w, 1e-6))


def test_opcheck_mixed_weight_dtype():
    x = torch.randn(4, 64, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(64, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(ops.rms_norm.default, (x, [64], w, 1e-6))
