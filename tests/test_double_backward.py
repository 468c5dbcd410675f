"""Second-order gradients of the spyre ops (Hessians, gradient penalties),
against torch.nn.functional.rms_norm (a composite of differentiable ops, an
independent reference) and torch.autograd.gradgradcheck in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import spyre_ops

SHAPES = [((3, 8), [8]), ((2, 3, 5), [3, 5])]


def _inputs(shape, normalized_shape, with_weight, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
    w = (torch.rand(normalized_shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_() if with_weight else None
    return x, w


@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize(("shape", "normalized_shape"), SHAPES)
def test_rms_norm_gradgradcheck(shape, normalized_shape, with_weight):
    x, w = _inputs(shape, normalized_shape, with_weight)
    inputs = (x, w) if with_weight else (x,)

    def f(*args):
        return spyre_ops.rms_norm(args[0], normalized_shape, args[1] if with_weight else None, 1e-3)

    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("with_weight", [False, True])
def test_fused_add_rms_norm_gradgradcheck(with_weight):
    x, w = _inputs((3, 8), [8], with_weight)
    r = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    inputs = (x, r, w) if with_weight else (x, r)

    def f(*args):
        out, summed = spyre_ops.fused_add_rms_norm(args[0], args[1], 8, args[2] if with_weight else None, 1e-3)
        return out, summed * summed  # both outputs feed the second derivative

    assert torch.autograd.gradgradcheck(f, inputs)


def test_hessian_matches_torch():
    x = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.functional.hessian(lambda t: spyre_ops.rms_norm(t, [8], None, 1e-5).pow(3).sum(), x)
    ref = torch.autograd.functional.hessian(lambda t: F.rms_norm(t, [8], None, 1e-5).pow(3).sum(), x)
    assert ref.abs().max() > 0.1  # a Hessian that is not trivially zero
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_penalty_reaches_x_and_weight(dtype):
    # The gradient of a function of the gradient (WGAN-GP style), with the
    # first backward run with create_graph=True.
    def penalty(norm, x, w):
        (gx,) = torch.autograd.grad(norm(x, w).pow(2).sum(), x, create_graph=True)
        gx.float().pow(2).sum().backward()
        return x.grad, w.grad

    base = torch.randn(4, 16, generator=torch.Generator().manual_seed(3)).to(dtype)
    wbase = (torch.rand(16, generator=torch.Generator().manual_seed(4)) + 0.5).to(dtype)
    ours = penalty(lambda x, w: spyre_ops.rms_norm(x, 16, w, 1e-5),
                   base.clone().requires_grad_(), wbase.clone().requires_grad_())
    ref = penalty(lambda x, w: F.rms_norm(x, [16], w, 1e-5),
                  base.double().requires_grad_(), wbase.double().requires_grad_())
    assert ours[0] is not None and ours[1] is not None
    tol = {torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    for got, want in zip(ours, ref):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, atol=tol * want.abs().max().item(), rtol=tol)


def test_first_order_gradients_are_the_same_with_create_graph():
    x, w = _inputs((5, 32), [32], True, seed=5)
    y = spyre_ops.rms_norm(x, 32, w, 1e-5)
    g = torch.randn_like(y)
    kernel = torch.autograd.grad(y, (x, w), g, retain_graph=True)
    composite = torch.autograd.grad(y, (x, w), g, create_graph=True)
    for a, b in zip(kernel, composite):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_compiled_double_backward_raises_instead_of_dropping():
    # AOT autograd does not differentiate its compiled backward; PyTorch says
    # so. What must never happen is a silent zero or None.
    f = torch.compile(lambda t: spyre_ops.rms_norm(t, [8], None, 1e-5), backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(f(x).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not currently support double backward"):
        gx.sum().backward()
