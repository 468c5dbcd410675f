"""The Gemma ops (``spyre_ops::gemma_*``, ``(1 + weight)`` applied in the kernels) on CPU:
against the float64 reference, against the route they replace (a ``1 + weight`` tensor
per call), against Hugging Face's ``Gemma3RMSNorm``; opcheck, torch.compile as single
nodes, autograd to second order, errors, nested tensors and the module."""

from __future__ import annotations

import pytest
import torch
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref
from torch._dynamo.testing import CompileCounterWithBackend

import spyre_ops
from spyre_ops import _C
from spyre_ops.nn import GemmaRMSNorm

gemma = torch.ops.spyre_ops
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
#: (shape of x, normalized_shape), as in test_numerics: odd widths, several trailing dims, 0-size.
SHAPES = [((33,), (33,)), ((7, 4096), (4096,)), ((2, 3, 130), (130,)), ((2, 5, 3, 7), (3, 7)), ((0, 64), (64,))]


def make(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def acc_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("wdtype", [None, "same", torch.float32])
def test_matches_reference(dtype, shape, ns, wdtype):
    x = make(shape, dtype)
    # Gemma weights are small offsets around 0 (the scale is 1 + w).
    w = None if wdtype is None else make(ns, dtype if wdtype == "same" else wdtype, seed=1, scale=0.5)
    y = spyre_ops.gemma_rms_norm(x, ns, w)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    assert_close_to_ref(y, rms_norm_ref(x, ns, w, 1e-6, weight_offset=1.0))
    r = make(shape, dtype, seed=2)
    out, summed = spyre_ops.gemma_fused_add_rms_norm(x, r, ns, w)
    ref_out, ref_sum = fused_add_rms_norm_ref(x, r, ns, w, 1e-6, weight_offset=1.0)
    assert torch.equal(summed, ref_sum)  # rounded to x.dtype first, as vLLM's kernels
    assert_close_to_ref(out, ref_out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 31, 64, 100, 515, 4096])
@pytest.mark.parametrize("wdtype", ["same", torch.float32])
@pytest.mark.parametrize("scale", [1.0, 1e-25, 1e30])
def test_same_bits_as_a_one_plus_weight_tensor(dtype, cols, wdtype, scale):
    # The offset is added in the accumulator dtype in the kernel: the result is
    # the one rms_norm gives with the weight (1 + w) made in that dtype, bit for
    # bit, on the fast path and on the exact path (rows whose squares under- or
    # overflow float32: scale 1e-25, 1e30; the latter only where x can hold it).
    if scale > 1e4 and dtype == torch.float16:
        scale = 1e4
    x = make((9, cols), dtype, seed=3, scale=scale)
    r = make((9, cols), dtype, seed=4, scale=scale)
    w = make((cols,), dtype if wdtype == "same" else wdtype, seed=5, scale=0.5)
    one_plus_w = w.to(acc_of(dtype)) + 1
    assert torch.equal(spyre_ops.gemma_rms_norm(x, cols, w), spyre_ops.rms_norm(x, cols, one_plus_w, 1e-6))
    out, summed = spyre_ops.gemma_fused_add_rms_norm(x, r, cols, w)
    ref_out, ref_sum = spyre_ops.fused_add_rms_norm(x, r, cols, one_plus_w, 1e-6)
    assert torch.equal(out, ref_out) and torch.equal(summed, ref_sum)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_weight_is_no_scale(dtype):
    x, r = make((5, 96), dtype), make((5, 96), dtype, seed=1)
    assert torch.equal(spyre_ops.gemma_rms_norm(x, 96, None, 1e-6), spyre_ops.rms_norm(x, 96, None, 1e-6))
    for a, b in zip(spyre_ops.gemma_fused_add_rms_norm(x, r, 96), spyre_ops.fused_add_rms_norm(x, r, 96, None, 1e-6)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_and_inplace_match_functional(dtype):
    x, r = make((4, 3, 96), dtype), make((4, 3, 96), dtype, seed=2)
    w = make((96,), dtype, seed=1, scale=0.5)
    expected = spyre_ops.gemma_rms_norm(x, 96, w)
    out = torch.empty_like(x)
    assert spyre_ops.gemma_rms_norm(x, 96, w, out=out) is out and torch.equal(out, expected)
    strided = torch.empty(96, 3, 4, dtype=dtype).permute(2, 1, 0)
    assert torch.equal(spyre_ops.gemma_rms_norm(x, 96, w, out=strided), expected)
    expected_out, expected_sum = spyre_ops.gemma_fused_add_rms_norm(x, r, 96, w)
    vx, vr = x._version, r._version
    assert spyre_ops.gemma_fused_add_rms_norm_(x, r, 96, w) is None
    assert torch.equal(x, expected_out) and torch.equal(r, expected_sum)
    assert x._version > vx and r._version > vr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_module_is_a_drop_in_for_hf_gemma3_rms_norm(dtype):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    hf = Gemma3RMSNorm(640)
    ours = GemmaRMSNorm(640)
    assert ours.eps == hf.eps == 1e-6 and torch.equal(ours.weight, hf.weight)  # zeros
    with torch.no_grad():
        hf.weight.copy_(make((640,), torch.float32, seed=6, scale=0.5))
    ours.load_state_dict(hf.state_dict())
    hf, ours = hf.to(dtype), ours.to(dtype)
    x = make((2, 7, 640), dtype, scale=30.0)
    expected = hf(x)
    got = ours(x)
    assert got.dtype == expected.dtype == dtype
    # HF computes in float32 too and rounds once: the two differ only by the order of
    # the float32 sum of squares and rsqrt against 1 / sqrt (a few float32 ulps), so a
    # 16-bit output differs by at most one ulp, a float32 one by a few.
    rtol = 4 * torch.finfo(dtype).eps if dtype == torch.float32 else torch.finfo(dtype).eps
    torch.testing.assert_close(got, expected, atol=0, rtol=rtol)
    out, summed = ours(x, x)
    torch.testing.assert_close(out, hf((x.float() + x.float()).to(dtype)), atol=0, rtol=rtol)
    assert torch.equal(summed, (x.float() + x.float()).to(dtype))


def test_module_state_and_reset():
    m = GemmaRMSNorm(8, dtype=torch.bfloat16)
    assert m.weight.dtype == torch.bfloat16 and not m.weight.any()
    assert list(m.state_dict()) == ["weight"]
    with torch.no_grad():
        m.weight.fill_(3.0)
    m.reset_parameters()
    assert not m.weight.any()
    x = make((3, 8), torch.float32)
    assert torch.equal(m.float()(x), spyre_ops.rms_norm(x, 8, None, 1e-6))  # 1 + 0
    assert torch.equal(GemmaRMSNorm(8, elementwise_affine=False)(x), spyre_ops.rms_norm(x, 8, None, 1e-6))


# (x shape, normalized_shape, non-contiguous x), as in test_opcheck.
OPCHECK_CASES = [((3, 40), (40,), False), ((2, 4, 5), (4, 5), False), ((0, 32), (32,), False), ((5, 48), (48,), True)]


def opcheck_x(shape, dtype, non_contiguous, requires_grad=False):
    x = torch.randn(*reversed(shape), dtype=dtype).t() if non_contiguous else torch.randn(shape, dtype=dtype)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "noweight"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck(case, dtype, with_weight, requires_grad):
    shape, ns, nc = case
    x = opcheck_x(shape, dtype, nc, requires_grad)
    w = torch.randn(ns, dtype=dtype, requires_grad=requires_grad) if with_weight else None
    r = torch.randn(x.shape, dtype=dtype, requires_grad=requires_grad)
    torch.library.opcheck(gemma.gemma_rms_norm.default, (x, list(ns), w, 1e-6))
    torch.library.opcheck(gemma.gemma_fused_add_rms_norm.default, (x, r, list(ns), w, 1e-6))
    if not requires_grad:
        torch.library.opcheck(gemma.gemma_fused_add_rms_norm_.default, (x.clone(), r.clone(), list(ns), w, 1e-6))
        torch.library.opcheck(gemma.gemma_rms_norm.out, (x, list(ns), w, 1e-6), {"out": torch.empty_like(x)})
        torch.library.opcheck(gemma.gemma_rms_norm_backward.default, (torch.randn_like(x), x, list(ns), w, 1e-6))


class GemmaBlock(torch.nn.Module):
    """A Gemma-style block: fused add + norm, projection, norm."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.input_norm = GemmaRMSNorm(hidden)
        self.proj = torch.nn.Linear(hidden, hidden, bias=False)
        self.out_norm = GemmaRMSNorm(hidden)
        with torch.no_grad():
            self.input_norm.weight.uniform_(-0.5, 0.5)
            self.out_norm.weight.uniform_(-0.5, 0.5)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h, residual = self.input_norm(h, residual)
        h = self.out_norm(self.proj(h))
        return torch.ops.spyre_ops.gemma_rms_norm(h, [64], self.out_norm.weight, 1e-6) + residual


def test_compile_single_nodes_once_for_all_token_counts():
    torch.manual_seed(0)
    block = GemmaBlock().requires_grad_(False)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=True)
    for tokens in (2, 3, 17, 100):
        h, r = make((tokens, 64), torch.float32, seed=tokens), make((tokens, 64), torch.float32, seed=-tokens)
        torch.testing.assert_close(compiled(h, r), block(h, r), atol=0, rtol=0)
    assert counter.frame_count == 1
    targets = [str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert targets.count("spyre_ops.gemma_fused_add_rms_norm") == 1
    assert targets.count("spyre_ops.gemma_rms_norm") == 2
    assert not any(t.startswith("spyre.") for t in targets)


@pytest.mark.parametrize("fn", [spyre_ops.gemma_rms_norm, spyre_ops.gemma_fused_add_rms_norm], ids=lambda f: f.__name__)
def test_compiled_wrappers_trace_to_the_op_and_never_recompile(fn):
    counter = CompileCounterWithBackend("aot_eager")
    w = make((64,), torch.float32, seed=1)
    args = (lambda h: (h, 64, w)) if fn is spyre_ops.gemma_rms_norm else (lambda h: (h, h, 64, w))
    compiled = torch.compile(lambda h: fn(*args(h)), backend=counter, fullgraph=True, dynamic=True)
    compiled(make((2, 64), torch.float32))
    frames = counter.frame_count  # the wrappers' float eps may restart the first analysis once
    for tokens in (3, 17, 100):
        h = make((tokens, 64), torch.float32, seed=tokens)
        expected = fn(*args(h))
        got = compiled(h)
        assert all(torch.equal(a, b) for a, b in zip(got, expected)) if isinstance(got, tuple) else torch.equal(got, expected)
    assert counter.frame_count == frames
    targets = [str(n.target) for n in counter.graphs[-1].graph.nodes if n.op == "call_function"]
    assert targets.count(f"spyre_ops.{fn.__name__}") == 1


def test_compiled_out_into_a_strided_tensor():
    f = torch.compile(lambda x, w, o: spyre_ops.gemma_rms_norm(x, 32, w, out=o), backend="aot_eager", fullgraph=True)
    x, w = make((4, 32), torch.float32), make((32,), torch.float32, seed=1)
    out = torch.empty(32, 4).t()
    f(x, w, out)
    assert torch.equal(out, spyre_ops.gemma_rms_norm(x, 32, w))
    with pytest.raises(RuntimeError, match=r"spyre_ops::gemma_rms_norm\.out: out has dtype"):
        f(x, w, torch.empty(32, 4, dtype=torch.float64).t())


@pytest.mark.parametrize("with_weight", [True, False])
def test_gradcheck_and_gradgradcheck(with_weight):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(3, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(2, 6, generator=g, dtype=torch.float64) * 0.5).requires_grad_() if with_weight else None
    extra = (w,) if with_weight else ()

    def norm(x, *w):
        return spyre_ops.gemma_rms_norm(x, (2, 6), w[0] if w else None, 1e-3)

    def fused(x, r, *w):
        out, summed = spyre_ops.gemma_fused_add_rms_norm(x, r, (2, 6), w[0] if w else None, 1e-3)
        return out, summed * summed

    assert torch.autograd.gradcheck(norm, (x, *extra))
    assert torch.autograd.gradgradcheck(norm, (x, *extra))
    assert torch.autograd.gradcheck(fused, (x, r, *extra))
    assert torch.autograd.gradgradcheck(fused, (x, r, *extra))


@pytest.mark.parametrize("create_graph", [False, True], ids=["kernel", "composite"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_gradients_match_autograd_of_the_reference(create_graph, dtype, tol):
    # create_graph=False: the backward op's kernel; True: the differentiable composite.
    x = make((6, 256), dtype).requires_grad_()
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    w = make((256,), wdtype, seed=1, scale=0.5).requires_grad_()
    g = make((6, 256), dtype, seed=2)
    gx, gw = torch.autograd.grad(spyre_ops.gemma_rms_norm(x, 256, w), (x, w), g, create_graph=create_graph)
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    rx, rw = torch.autograd.grad(rms_norm_ref(xd, [256], wd, 1e-6, weight_offset=1.0), (xd, wd), g.double())
    assert gx.dtype == dtype and gw.dtype == wdtype
    torch.testing.assert_close(gx.double(), rx, atol=tol, rtol=tol)
    torch.testing.assert_close(gw.double(), rw, atol=tol * 10, rtol=tol)


def test_hessian_matches_the_reference():
    x = make((1, 8), torch.float64, seed=3)
    w = make((8,), torch.float64, seed=4, scale=0.5)
    ours = torch.autograd.functional.hessian(lambda t: spyre_ops.gemma_rms_norm(t, 8, w).pow(3).sum(), x)
    ref = torch.autograd.functional.hessian(lambda t: rms_norm_ref(t, [8], w, 1e-6, 1.0).pow(3).sum(), x)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_training_graph_holds_the_gemma_backward_op():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    block = GemmaBlock()
    compiled = torch.compile(block, backend=aot_autograd(fw_compiler=capture, bw_compiler=capture), fullgraph=True)
    h, r = make((5, 64), torch.float32), make((5, 64), torch.float32, seed=1)
    compiled(h, r).sum().backward()
    grad = block.out_norm.weight.grad.clone()
    block.zero_grad()
    block(h, r).sum().backward()
    torch.testing.assert_close(grad, block.out_norm.weight.grad)
    backward = [str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"]
    assert backward.count("spyre_ops.gemma_rms_norm_backward.default") == 3


def test_inplace_and_out_are_not_differentiable():
    x, r = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8)
    with pytest.raises(RuntimeError, match=r"spyre_ops::gemma_fused_add_rms_norm_: the in-place op is not "
                                           r"differentiable.*use spyre_ops::gemma_fused_add_rms_norm "):
        spyre_ops.gemma_fused_add_rms_norm_(x, r, 8)
    with pytest.raises(RuntimeError, match=r"spyre_ops::gemma_rms_norm\.out: out= is not differentiable"):
        spyre_ops.gemma_rms_norm(x, 8, out=torch.empty(3, 8))


def test_eager_entry_points_are_the_torch_ops_call():
    x, r = make((3, 64), torch.bfloat16), make((3, 64), torch.bfloat16, seed=1)
    w = make((64,), torch.bfloat16, seed=2)
    assert torch.equal(_C.gemma_rms_norm(x, 64, w, 1e-6, None), gemma.gemma_rms_norm(x, [64], w, 1e-6))
    out = torch.empty_like(x)
    assert _C.gemma_rms_norm(x, [64], w, 1e-6, out) is out and torch.equal(out, gemma.gemma_rms_norm(x, [64], w))
    for a, b in zip(_C.gemma_fused_add_rms_norm(x, r, (64,), w, 1e-6), gemma.gemma_fused_add_rms_norm(x, r, [64], w)):
        assert torch.equal(a, b)
    assert _C.gemma_rms_norm(x, 64.0, w, 1e-6, None) is NotImplemented
    assert _C.gemma_fused_add_rms_norm_(x, r, [64], w, 1) is NotImplemented


def test_jagged_nested_tensors():
    rows = [make((n, 16), torch.float32, seed=n) for n in (2, 5)]
    nt = torch.nested.nested_tensor(rows, layout=torch.jagged)
    w = make((16,), torch.float32, seed=9, scale=0.5)
    y = spyre_ops.gemma_rms_norm(nt, 16, w)
    for got, row in zip(y.unbind(), rows):
        assert torch.equal(got, spyre_ops.gemma_rms_norm(row, 16, w))
    out, summed = spyre_ops.gemma_fused_add_rms_norm(nt, nt, 16, w)
    assert torch.equal(summed.values(), nt.values() * 2)
    with pytest.raises(RuntimeError, match="spyre_ops::gemma_fused_add_rms_norm_: jagged nested tensors are "
                                           "supported by spyre_ops::gemma_rms_norm and"):
        spyre_ops.gemma_fused_add_rms_norm_(nt, nt.clone(), 16, w)


def test_tensor_eps_is_refused_by_name():
    with pytest.raises(TypeError, match=r"spyre_ops\.gemma_rms_norm: eps must be a float"):
        spyre_ops.gemma_rms_norm(torch.randn(2, 8), 8, None, torch.tensor(1e-6))
    with pytest.raises(TypeError, match=r"spyre_ops\.gemma_fused_add_rms_norm_: eps must be a float"):
        spyre_ops.gemma_fused_add_rms_norm_(torch.randn(2, 8), torch.randn(2, 8), 8, None, torch.tensor(1e-6))
