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
    # An np.float32 argument of the compiled function is traced as data (an unbacked float
    # Dynamo cannot specialize on; F.rms_norm fails on it too): refused naming the argument
    # and the fix, not with Dynamo's op-resolution or data-dependent error.
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"spyre_ops.rms_norm: eps is a NumPy scalar passed into the compiled "
                       r"code.*pass a Python float"):
        torch.compile(spyre_ops.rms_norm, backend="eager", fullgraph=True)(x, 8, w, np.float32(1e-3))


#: The public wrappers, each called as (x, residual, n, w, eps) -> its tensors (an in-place
#: call on clones returns the clones).
def _call_wrapper(name, x, r, n, w, eps):
    fn = getattr(spyre_ops, name)
    if name.endswith("_"):
        a, b = x.clone(), r.clone()
        fn(a, b, n, w, eps)
        return a, b
    if "fused" in name:
        return fn(x, r, n, w, eps)
    return (fn(x, n, w, eps),)


WRAPPERS = ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_",
            "gemma_rms_norm", "gemma_fused_add_rms_norm", "gemma_fused_add_rms_norm_"]


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", WRAPPERS)
def test_numpy_scalars_made_in_compiled_code(name, dynamic):
    # np.int64 normalized_shape, np.float32 and np.float64 eps written in the compiled code:
    # accepted as in eager mode (Dynamo traces them as constant 0-dim arrays), same results.
    x, r, w = torch.randn(3, 64) * 1e-2, torch.randn(3, 64) * 1e-2, torch.rand(64) + 0.5

    def fn(x, r, w):
        return (*_call_wrapper(name, x, r, np.int64(64), w, np.float32(0.25)),
                *_call_wrapper(name, x, r, (np.int64(64),), w, np.float64(1e-3)))

    torch._dynamo.reset()
    got = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=dynamic)(x, r, w)
    _assert_same(got, fn(x, r, w))
    # eps matters at this scale (mean(x^2) ~ 1e-4): the two eps give different results.
    assert not torch.equal(got[0], got[len(got) // 2])


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", WRAPPERS)
def test_numpy_scalar_arguments_of_compiled_code(name, dynamic):
    # An np.int64 size and an np.float64 eps passed into the compiled function: accepted,
    # and a later call with other values gets their results, not the first call's.
    fn = lambda x, r, n, w, eps: _call_wrapper(name, x, r, n, w, eps)  # noqa: E731
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    for size, eps in ((64, 1e-3), (64, 0.25), (32, 1e-3)):
        x, r, w = torch.randn(3, size) * 1e-2, torch.randn(3, size) * 1e-2, torch.rand(size) + 0.5
        args = (x, r, np.int64(size), w, np.float64(eps))
        got = compiled(*args)
        _assert_same(got, fn(*args))
        offset = 1.0 if name.startswith("gemma") else 0.0
        summed = x + r if "fused" in name else x
        assert_close_to_ref(got[0], rms_norm_ref(summed, [size], w, eps, offset))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("cls", [spyre_ops.nn.RMSNorm, spyre_ops.nn.GemmaRMSNorm])
def test_numpy_scalars_in_modules_under_compile(cls, dynamic):
    m = cls(np.int64(64), eps=np.float32(0.25))
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
    x, r = torch.randn(3, 64) * 1e-2, torch.randn(3, 64) * 1e-2
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    torch.testing.assert_close(compiled(x), m(x), rtol=0, atol=0)
    _assert_same(compiled(x, r), m(x, r))
    offset = 1.0 if cls is spyre_ops.nn.GemmaRMSNorm else 0.0
    assert_close_to_ref(compiled(x), rms_norm_ref(x, [64], m.weight, float(np.float32(0.25)), offset))


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


RAW_RAGGED_CALLS = {
    "spyre.rms_norm": lambda nt: torch.ops.spyre.rms_norm(nt, [3]),
    "spyre.rms_norm-kwargs": lambda nt: torch.ops.spyre.rms_norm(x=nt, normalized_shape=[3]),
    "spyre.rms_norm.default": lambda nt: torch.ops.spyre.rms_norm.default(nt, [3]),
    "spyre.fused_add_rms_norm": lambda nt: torch.ops.spyre.fused_add_rms_norm(nt, nt, [3]),
    "spyre_ops.gemma_rms_norm": lambda nt: torch.ops.spyre_ops.gemma_rms_norm(nt, [3]),
    "spyre_ops.gemma_fused_add_rms_norm": lambda nt: torch.ops.spyre_ops.gemma_fused_add_rms_norm(nt, nt, [3]),
}


@pytest.mark.parametrize("call", list(RAW_RAGGED_CALLS))
def test_jagged_ragged_dim_through_raw_ops_is_the_documented_runtime_error(call):
    # PyTorch's nested-tensor code raises a ValueError for any op named rms_norm (the
    # packet torch.ops.spyre.rms_norm): our check runs first, as docs/api.md says.
    nt, _ = _jagged()
    op = call.split("-")[0].replace(".default", "").replace(".", "::")
    with pytest.raises(RuntimeError, match=f"{op}: x is a jagged nested tensor whose ragged dimension "
                       r"\(dim 2\) is among the normalized dimensions"):
        RAW_RAGGED_CALLS[call](nt.transpose(1, 2))
    # Only the ragged dim is refused: the dim after it is normalized, raw packet call too.
    y = torch.ops.spyre.rms_norm(nt, [8])
    for got, part in zip(y.unbind(), nt.unbind()):
        assert_close_to_ref(got, rms_norm_ref(part, [8]))


def test_strided_nested_is_refused_by_name():
    nt = torch.nested.nested_tensor([torch.randn(2, 8), torch.randn(3, 8)])
    with pytest.raises(RuntimeError, match="spyre::rms_norm: x is a nested tensor with the strided layout"):
        spyre_ops.rms_norm(nt, 8)
    with pytest.raises(RuntimeError, match="x is a nested tensor with the strided layout"):
        spyre_ops.fused_add_rms_norm(nt, nt, 8)


def test_none_x_names_the_argument():
    with pytest.raises(RuntimeError, match="spyre::rms_norm: x must be a tensor, got None"):
        torch.ops.spyre.rms_norm(None, [8])
