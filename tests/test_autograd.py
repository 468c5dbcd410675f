"""Autograd: gradcheck in float64, and gradients against autograd of the float64 reference."""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref

import spyre_ops


@pytest.mark.parametrize("shape,ns", [((3, 17), (17,)), ((2, 3, 4, 5), (4, 5)), ((11,), (11,))])
@pytest.mark.parametrize("with_weight", [True, False])
def test_gradcheck_rms_norm(shape, ns, with_weight):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    inputs = [x]
    if with_weight:
        inputs.append(torch.randn(ns, dtype=torch.float64, requires_grad=True))

    def f(x, w=None):
        return spyre_ops.rms_norm(x, ns, w, 1e-5)

    assert torch.autograd.gradcheck(f, tuple(inputs))


@pytest.mark.parametrize("with_weight", [True, False])
def test_gradcheck_fused_add_rms_norm(with_weight):
    x = torch.randn(4, 23, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, 23, dtype=torch.float64, requires_grad=True)
    inputs = [x, r]
    if with_weight:
        inputs.append(torch.randn(23, dtype=torch.float64, requires_grad=True))

    def f(x, r, w=None):
        return spyre_ops.fused_add_rms_norm(x, r, [23], w, 1e-5)

    assert torch.autograd.gradcheck(f, tuple(inputs))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_gradients_match_reference(dtype, tol):
    x = torch.randn(6, 256, dtype=dtype, requires_grad=True)
    w = torch.randn(256, dtype=torch.float32, requires_grad=True)
    g = torch.randn(6, 256, dtype=dtype)
    gx, gw = torch.autograd.grad(spyre_ops.rms_norm(x, [256], w), (x, w), g)
    assert gx.dtype == dtype and gw.dtype == torch.float32

    xd = x.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_()
    rx, rw = torch.autograd.grad(rms_norm_ref(xd, [256], wd), (xd, wd), g.double())
    torch.testing.assert_close(gx.double(), rx, atol=tol, rtol=tol)
    torch.testing.assert_close(gw.double(), rw, atol=tol * 10, rtol=tol)


def test_only_x_requires_grad():
    x = torch.randn(3, 8, requires_grad=True)
    w = torch.randn(8)
    y = spyre_ops.rms_norm(x, [8], w)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    assert gx.shape == x.shape


def test_inplace_op_is_not_differentiable():
    x = torch.randn(3, 8, requires_grad=True)
    r = torch.randn(3, 8)
    with pytest.raises(RuntimeError):
        spyre_ops.fused_add_rms_norm_(x, r, [8])


def test_inplace_op_bumps_version_counters():
    # Autograd must see the mutation: a saved tensor that was overwritten is an error.
    x, r = torch.randn(3, 8), torch.randn(3, 8)
    vx, vr = x._version, r._version
    spyre_ops.fused_add_rms_norm_(x, r, [8])
    assert x._version > vx and r._version > vr

    a = torch.randn(3, 8, requires_grad=True)
    h = torch.randn(3, 8)
    y = a * h  # saves h for backward
    with torch.no_grad():
        spyre_ops.fused_add_rms_norm_(h, torch.randn(3, 8), [8])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
