"""Drop-in gaps against torch.nn.RMSNorm / torch.nn.functional.rms_norm:
NumPy integer sizes, eps=None, TorchScript, nested tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spyre_ops
from reference import assert_close_to_ref, rms_norm_ref


def test_numpy_integer_sizes():
    x = torch.randn(3, 8)
    assert_close_to_ref(spyre_ops.rms_norm(x, np.int64(8)), rms_norm_ref(x, [8]))
    assert_close_to_ref(spyre_ops.fused_add_rms_norm(x, x, np.int32(8))[0], rms_norm_ref(2 * x, [8]))
    m = spyre_ops.nn.RMSNorm(np.int64(16))
    assert m.normalized_shape == (16,) and type(m.normalized_shape[0]) is int
    assert m.weight.shape == (16,)
    assert spyre_ops.nn.RMSNorm((np.int64(2), np.int64(16))).normalized_shape == (2, 16)


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_"])
def test_numpy_integer_sizes_under_compile(op):
    x, w = torch.randn(3, 8), torch.rand(8) + 0.5

    def call(x, n, w):
        if op == "rms_norm":
            return spyre_ops.rms_norm(x, n, w, 1e-5)
        if op == "fused_add_rms_norm":
            return spyre_ops.fused_add_rms_norm(x, x, n, w, 1e-5)[0]
        out, r = x.clone(), x.clone()
        spyre_ops.fused_add_rms_norm_(out, r, n, w, 1e-5)
        return out

    torch._dynamo.reset()
    compiled = torch.compile(call, backend="aot_eager", fullgraph=True)
    expected = rms_norm_ref(x if op == "rms_norm" else 2 * x, [8], w, 1e-5)
    assert_close_to_ref(compiled(x, np.int64(8), w), expected)
    assert_close_to_ref(compiled(x, (np.int64(8),), w), expected)


def test_numpy_eps_eager_and_compiled():
    x, w = torch.randn(3, 8), torch.rand(8) + 0.5
    assert_close_to_ref(spyre_ops.rms_norm(x, 8, w, np.float32(1e-3)), rms_norm_ref(x, [8], w, float(np.float32(1e-3))))
    # Dynamo traces a NumPy scalar as a tensor (data, never the constant a float eps
    # must be): refused naming the argument and the fix, not with Dynamo's op-resolution error.
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"spyre_ops.rms_norm: eps is a NumPy scalar.*pass a Python float"):
        torch.compile(spyre_ops.rms_norm, backend="eager", fullgraph=True)(x, 8, w, np.float32(1e-3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_eps_none_is_torch_default(dtype):
    ours = spyre_ops.nn.RMSNorm(16, eps=None).to(dtype)
    ref = torch.nn.RMSNorm(16, eps=None).to(dtype)
    # Rows small enough for eps to matter: mean(x^2) ~ 1e-14, next to eps ~ 1e-7.
    x = (torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e-7).to(dtype)
    expected = ref(x)
    other_eps = F.rms_norm(x, [16], None, torch.finfo(dtype).eps * 64)
    assert not torch.allclose(expected, other_eps)  # the test can tell eps values apart
    torch.testing.assert_close(ours(x), expected, atol=0, rtol=torch.finfo(dtype).eps * 4)
    assert ours.eps is None and "eps=None" in repr(ours)


def test_eps_none_under_compile():
    m = spyre_ops.nn.RMSNorm(16, eps=None)
    x = torch.randn(4, 16) * 1e-4
    torch._dynamo.reset()
    got = torch.compile(m, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, torch.nn.RMSNorm(16, eps=None)(x))


@pytest.mark.parametrize("eps", [1e-6, None])
def test_torchscript(eps):
    m = spyre_ops.nn.RMSNorm(16, eps=eps)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
    scripted = torch.jit.script(m)
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    torch.testing.assert_close(scripted(x), m(x), atol=0, rtol=0)
    out, summed = scripted(x, r)
    expected = m(x, r)
    assert torch.equal(out, expected[0]) and torch.equal(summed, expected[1])
    assert_close_to_ref(scripted(x), rms_norm_ref(x, [16], m.weight, eps if eps is not None else 1.1920928955078125e-07))


def _jagged(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n, 8, generator=g).to(dtype) for n in (2, 3, 1)]
    return torch.nested.nested_tensor(parts, layout=torch.jagged), parts


def test_jagged_nested_rms_norm_matches_functional():
    nt, parts = _jagged()
    w = torch.rand(8) + 0.5
    y = spyre_ops.rms_norm(nt, 8, w, 1e-5)
    assert y.is_nested and y.layout == torch.jagged
    ref = F.rms_norm(nt, [8], w, 1e-5)
    for got, want, part in zip(y.unbind(), ref.unbind(), parts):
        torch.testing.assert_close(got, want)
        assert_close_to_ref(got, rms_norm_ref(part, [8], w, 1e-5))


def test_jagged_nested_fused_and_backward():
    nt, parts = _jagged(1)
    res, rparts = _jagged(2)
    res = torch.nested.nested_tensor_from_jagged(res.values(), nt.offsets())
    out, summed = spyre_ops.fused_add_rms_norm(nt, res, 8)
    for o, s, p, q in zip(out.unbind(), summed.unbind(), parts, rparts):
        assert_close_to_ref(o, rms_norm_ref(p + q, [8]))
        torch.testing.assert_close(s, p + q)
    values = nt.values().clone().requires_grad_()
    w = (torch.rand(8) + 0.5).requires_grad_()
    x = torch.nested.nested_tensor_from_jagged(values, nt.offsets())
    spyre_ops.rms_norm(x, 8, w).values().pow(2).sum().backward()
    v_ref, w_ref = values.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.rms_norm(v_ref, [8], w_ref, 1e-5).pow(2).sum().backward()
    torch.testing.assert_close(values.grad, v_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)


@pytest.mark.parametrize("loss_uses", ["out", "sum", "both"])
def test_jagged_fused_backward_with_either_output_unused(loss_uses):
    # The common case uses `out` only: the unused output's gradient must not be
    # materialized as zeros of a jagged (symbolic) shape.
    nt, _ = _jagged(3)
    res, _ = _jagged(4)
    xv, rv = nt.values().clone().requires_grad_(), res.values().clone().requires_grad_()
    w = (torch.rand(8) + 0.5).requires_grad_()
    x = torch.nested.nested_tensor_from_jagged(xv, nt.offsets())
    r = torch.nested.nested_tensor_from_jagged(rv, nt.offsets())
    out, summed = spyre_ops.fused_add_rms_norm(x, r, 8, w)
    use_out, use_sum = loss_uses in ("out", "both"), loss_uses in ("sum", "both")

    def loss(out_values, sum_values):
        terms = [out_values.pow(2).sum()] * use_out + [sum_values.sin().sum()] * use_sum
        return sum(terms[1:], terms[0])

    loss(out.values(), summed.values()).backward()
    refs = [t.detach().clone().requires_grad_() for t in (xv, rv, w)]
    s_ref = refs[0] + refs[1]
    loss(F.rms_norm(s_ref, [8], refs[2], 1e-5), s_ref).backward()
    for got, want in zip((xv.grad, rv.grad), refs[:2]):
        torch.testing.assert_close(got, want.grad)
    if use_out:
        torch.testing.assert_close(w.grad, refs[2].grad)
    else:
        assert w.grad is None


def test_jagged_refusals_are_clear():
    nt, _ = _jagged()
    # Normalizing over the ragged dim: refused by our checks (the wrapper runs them before
    # PyTorch's nested-tensor code, which intercepts every op named rms_norm).
    with pytest.raises(RuntimeError, match="spyre::rms_norm: x is a jagged nested tensor whose ragged dim"):
        spyre_ops.rms_norm(nt.transpose(1, 2), 3)
    with pytest.raises(RuntimeError, match="spyre::fused_add_rms_norm: x is a jagged nested tensor whose ragged"):
        spyre_ops.fused_add_rms_norm(nt.transpose(1, 2), nt.transpose(1, 2), 3)
    with pytest.raises(RuntimeError, match="jagged nested tensors are supported by"):
        spyre_ops.fused_add_rms_norm_(nt, nt.clone(), 8)


def test_strided_nested_is_refused_by_name():
    nt = torch.nested.nested_tensor([torch.randn(2, 8), torch.randn(3, 8)])
    with pytest.raises(RuntimeError, match="spyre::rms_norm: x is a nested tensor with the strided layout"):
        spyre_ops.rms_norm(nt, 8)
    with pytest.raises(RuntimeError, match="x is a nested tensor with the strided layout"):
        spyre_ops.fused_add_rms_norm(nt, nt, 8)


def test_none_x_names_the_argument():
    with pytest.raises(RuntimeError, match="spyre::rms_norm: x must be a tensor, got None"):
        torch.ops.spyre.rms_norm(None, [8])
