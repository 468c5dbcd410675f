"""torch.func transforms and forward-mode AD through the spyre ops, against
torch.nn.functional.rms_norm (ATen's own composite, differentiated by PyTorch)
in float64, and against the float64 reference for the forward values.

A C++ autograd::Function supports neither, so such calls take the ops'
composite path (csrc/composite.h); plain calls keep the C++ Function.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from reference import rms_norm_ref
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import spyre_ops

EPS = 1e-5
TOL = {"atol": 1e-10, "rtol": 1e-10}  # float64 against float64: rounding only


def _inputs(seed=0, rows=3, cols=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    r = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    w = 0.5 + torch.rand(cols, generator=g, dtype=torch.float64)
    return x, r, w


def ours(x, w):
    return spyre_ops.rms_norm(x, x.shape[-1], w, EPS)


def theirs(x, w):
    return F.rms_norm(x, [x.shape[-1]], w, EPS)


def ours_fused(x, r, w):
    return spyre_ops.fused_add_rms_norm(x, r, x.shape[-1], w, EPS)


def theirs_fused(x, r, w):
    return F.rms_norm(x + r, [x.shape[-1]], w, EPS), x + r


TRANSFORMS = {
    "grad": lambda f, x, r, w: grad(lambda x, w: f(x, w).sin().sum(), argnums=(0, 1))(x, w),
    "vjp": lambda f, x, r, w: vjp(f, x, w)[1](r),
    "jacrev": lambda f, x, r, w: jacrev(f, argnums=(0, 1))(x, w),
    "jacfwd": lambda f, x, r, w: jacfwd(f, argnums=(0, 1))(x, w),
    "jvp": lambda f, x, r, w: jvp(f, (x, w), (r, w.flip(0))),
    "hessian": lambda f, x, r, w: hessian(lambda x: f(x, w).sin().sum())(x[0]),
    "vmap(grad)": lambda f, x, r, w: vmap(grad(lambda x: f(x, w).sin().sum()))(x),
    "grad(grad)": lambda f, x, r, w: grad(lambda x: grad(lambda x: f(x, w).sin().sum())(x).sum())(x),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_rms_norm_under_transform_matches_functional(name):
    x, r, w = _inputs()
    torch.testing.assert_close(TRANSFORMS[name](ours, x, r, w), TRANSFORMS[name](theirs, x, r, w), **TOL)


@pytest.mark.parametrize("name", ["grad", "jacrev", "jacfwd", "jvp"])
def test_torch_ops_under_transform_matches_functional(name):
    x, r, w = _inputs(1)

    def raw(x, w):
        return torch.ops.spyre.rms_norm(x, [x.shape[-1]], w, EPS)

    torch.testing.assert_close(TRANSFORMS[name](raw, x, r, w), TRANSFORMS[name](theirs, x, r, w), **TOL)


@pytest.mark.parametrize("name", ["jacrev", "jacfwd", "jvp", "hessian"])
def test_fused_add_rms_norm_under_transform_matches_functional(name):
    x, r, w = _inputs(2)
    jac = {
        "jacrev": lambda f: jacrev(f, argnums=(0, 1, 2))(x, r, w),
        "jacfwd": lambda f: jacfwd(f, argnums=(0, 1, 2))(x, r, w),
        "jvp": lambda f: jvp(f, (x, r, w), (r, x, w.flip(0))),
        "hessian": lambda f: hessian(lambda x: f(x, r[0], w)[0].sin().sum())(x[0]),
    }[name]
    torch.testing.assert_close(jac(ours_fused), jac(theirs_fused), **TOL)


def test_transform_forward_values_match_reference():
    x, r, w = _inputs(3)
    (y, tangent) = jvp(ours, (x, w), (r, torch.zeros_like(w)))
    torch.testing.assert_close(y, rms_norm_ref(x, [8], w, EPS), **TOL)
    assert tangent.shape == x.shape


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_grad_matches_functional(dtype, tol):
    x, r, w = (t.to(dtype) for t in _inputs(4, rows=5, cols=64))
    got = grad(lambda x: ours(x, w).float().pow(2).sum())(x)
    want = grad(lambda x: theirs(x.float(), w.float()).pow(2).sum())(x.float())
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm"])
def test_forward_mode_ad_matches_functional(op):
    x, r, w = _inputs(5)
    tx, tr, tw = _inputs(6)

    def tangents(f, g):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(a, t) for a, t in ((x, tx), (r, tr), (w, tw))]
            return [fwAD.unpack_dual(o).tangent for o in f(*duals)] if op != "rms_norm" else \
                fwAD.unpack_dual(g(duals[0], duals[2])).tangent

    if op == "rms_norm":
        got, want = tangents(None, ours), tangents(None, theirs)
    else:
        got, want = tangents(ours_fused, None), tangents(theirs_fused, None)
    torch.testing.assert_close(got, want, **TOL)


def test_plain_calls_keep_the_cpp_function():
    # The composite path is only for transforms and tangents: a plain call records the C++ node.
    x, r, w = _inputs(7)
    y = ours(x.requires_grad_(), w)
    assert "::RmsNormFunction<" in y.grad_fn.name()
    out, _ = ours_fused(x, r, w)
    assert "::FusedAddRmsNormFunction<" in out.grad_fn.name()


def test_transforms_refuse_what_eager_refuses():
    x, r, w = _inputs(8)
    with pytest.raises(RuntimeError, match="spyre::rms_norm: weight has shape \\[4\\] but normalized_shape is \\[8\\]"):
        grad(lambda x: spyre_ops.rms_norm(x, 8, w[:4], EPS).sum())(x)
    with pytest.raises(RuntimeError, match="spyre::fused_add_rms_norm: residual has shape"):
        jvp(lambda x: ours_fused(x, r[:2], w)[0], (x,), (x,))


def test_compiled_grad_matches_functional():
    x, _, w = _inputs(9)
    torch._dynamo.reset()
    got = torch.compile(grad(lambda x: ours(x, w).sin().sum()), backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, grad(lambda x: theirs(x, w).sin().sum())(x), **TOL)


def test_module_parameters_under_functional_call():
    m = spyre_ops.nn.RMSNorm(8, eps=EPS).double()
    x, _, w = _inputs(10)
    with torch.no_grad():
        m.weight.copy_(w)
    got = grad(lambda p: torch.func.functional_call(m, p, (x,)).sin().sum())(dict(m.named_parameters()))
    torch.testing.assert_close(got["weight"], grad(lambda w: theirs(x, w).sin().sum())(w), **TOL)
