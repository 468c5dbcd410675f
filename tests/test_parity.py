"""Eager mode and torch.compile agree: what eager refuses, compile refuses with
the same message (raised while tracing, by the fake kernels); what eager
accepts, compile accepts (fullgraph=True)."""

from __future__ import annotations

import contextlib
import math
import random
import re

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode

import spyre_ops
from reference import assert_close_to_ref, rms_norm_ref

ops = torch.ops.spyre


def _eager_and_compiled_errors(fn, *args, backend="aot_eager", dynamic=False):
    """The message of the error fn raises in eager mode, and compiled."""
    with pytest.raises(RuntimeError) as eager:
        fn(*args)
    torch._dynamo.reset()
    with pytest.raises(RuntimeError) as compiled:
        torch.compile(fn, backend=backend, fullgraph=True, dynamic=dynamic)(*args)
    return str(eager.value), str(compiled.value)


# (id, fn, args builder, message) for calls that eager refuses for an overlap.
OVERLAPS = [
    ("out-partially-x", lambda x, out: spyre_ops.rms_norm(x, 8, None, 1e-5, out=out),
     lambda: (lambda b: (b[:4], b[1:]))(torch.randn(5, 8)),
     "spyre::rms_norm.out: out overlaps x without being x"),
    ("out-transposed-x", lambda x, out: spyre_ops.rms_norm(x, 8, None, 1e-5, out=out),
     lambda: (lambda b: (b, b.t().contiguous().t()[:0].new_empty(0) if False else b.as_strided((8, 8), (1, 8))))(torch.randn(8, 8)),
     "spyre::rms_norm.out: out overlaps x without being x"),
    ("weight-is-a-row-of-out", lambda x, out: spyre_ops.rms_norm(x, 8, out[0], 1e-5, out=out),
     lambda: (torch.randn(8, 8), torch.randn(8, 8)),
     "spyre::rms_norm.out: weight shares memory with out"),
    ("inplace-weight-in-residual", lambda x, r: spyre_ops.fused_add_rms_norm_(x, r, 8, r[0], 1e-5),
     lambda: (torch.randn(8, 8), torch.randn(8, 8)),
     "spyre::fused_add_rms_norm_: weight shares memory with residual"),
    ("inplace-weight-in-x", lambda x, r: spyre_ops.fused_add_rms_norm_(x, r, 8, x[3], 1e-5),
     lambda: (torch.randn(8, 8), torch.randn(8, 8)),
     "spyre::fused_add_rms_norm_: weight shares memory with x"),
    ("inplace-x-is-residual", lambda b: spyre_ops.fused_add_rms_norm_(b[:4], b[2:], 8, None, 1e-5),
     lambda: (torch.randn(6, 8),),
     "spyre::fused_add_rms_norm_: x and residual overlap"),
    # Column slices of one buffer that share columns 32..63: at::get_overlap_status says "too hard".
    ("inplace-strided-views-overlap", lambda b: spyre_ops.fused_add_rms_norm_(b[:, 0:64], b[:, 32:96], 64, None, 1e-5),
     lambda: (torch.randn(4, 96),),
     "spyre::fused_add_rms_norm_: x and residual may overlap (strided views of one buffer that share "
     "elements, or whose layouts cannot be told apart), and the op writes both; pass tensors that do not "
     "share memory (e.g. residual.clone())"),
    ("out-expanded", lambda x, out: spyre_ops.rms_norm(x, 8, None, 1e-5, out=out),
     lambda: (torch.randn(3, 8), torch.empty(8).expand(3, 8)),
     "spyre::rms_norm.out: out overlaps itself (an expanded tensor), and the op writes it; pass a tensor "
     "whose elements are distinct (e.g. torch.empty_like(x))"),
]


@pytest.mark.parametrize("fn,make_args,message", [c[1:] for c in OVERLAPS], ids=[c[0] for c in OVERLAPS])
def test_overlaps_are_refused_in_eager_and_compiled(fn, make_args, message):
    eager, compiled = _eager_and_compiled_errors(fn, *make_args())
    assert message in eager
    assert message in compiled


def test_strided_overlapping_views_are_left_untouched():
    # The refusal comes before anything is written (it used to write x wrong, silently).
    buf = torch.randn(4, 96)
    before = buf.clone()
    with pytest.raises(RuntimeError, match="x and residual may overlap"):
        spyre_ops.fused_add_rms_norm_(buf[:, 0:64], buf[:, 32:96], 64)
    with pytest.raises(RuntimeError, match="x and residual may overlap"):
        torch.ops.spyre.fused_add_rms_norm_(buf[:, 0:64], buf[:, 32:96], [64])
    assert torch.equal(buf, before)


# Views of one buffer that at::get_overlap_status calls "too hard": (x, residual, shares an element).
TOO_HARD_VIEWS = {
    "column blocks side by side": (lambda b: (b[:, 0:32], b[:, 32:64]), False),
    "interleaved columns": (lambda b: (b[:, 0::2], b[:, 1::2]), False),
    "column blocks sharing columns": (lambda b: (b[:, 0:32], b[:, 16:48]), True),
    "rows apart, columns shared": (lambda b: (b[0:3, 0:32], b[3:6, 8:40]), False),
    "every other row, shifted a row": (lambda b: (b[0:6:2, 0:32], b[2:8:2, 0:32]), True),
    "transposed blocks": (lambda b: (b[:, 0:6].t(), b[:, 6:12].t()), False),
    "different strides": (lambda b: (b[0:4, 0:6], b.t()[0:4, 0:6]), True),
}


@pytest.mark.parametrize("case", list(TOO_HARD_VIEWS))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_too_hard_views_are_computed_or_refused(case, compiled):
    make, shared = TOO_HARD_VIEWS[case]
    buf = torch.randn(8, 64)
    x, r = make(buf)
    assert torch._debug_has_internal_overlap(x) != 1
    # Ground truth, from the elements' storage offsets.
    index = torch.arange(buf.numel()).view(buf.shape)
    ix, ir = make(index)
    assert bool(torch.isin(ix.flatten(), ir.flatten()).any()) == shared
    expected_out, expected_sum = spyre_ops.fused_add_rms_norm(x.clone(), r.clone(), x.shape[-1])
    fn = lambda b: spyre_ops.fused_add_rms_norm_(*make(b), x.shape[-1])  # noqa: E731
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, backend="aot_eager", fullgraph=True)
    if shared:
        before = buf.clone()
        with pytest.raises(RuntimeError, match="x and residual may overlap"):
            fn(buf)
        assert torch.equal(buf, before)
    else:
        fn(buf)
        x, r = make(buf)
        torch.testing.assert_close(x, expected_out, rtol=0, atol=0)
        torch.testing.assert_close(r, expected_sum, rtol=0, atol=0)


def _random_same_layout_views(rng):
    """Two views of one buffer with the same sizes and strides (a strided, permuted slice of a dense block) at
    offsets apart by a random amount, and whether they share an element."""
    while True:
        shape = [rng.randint(1, 5) for _ in range(rng.randint(1, 3))] + [rng.randint(2, 6)]
        steps = [rng.randint(1, 3) for _ in shape]
        block = [n * st for n, st in zip(shape, steps)]
        if math.prod(block) <= 240:
            break
    view = torch.empty(block)[tuple(slice(None, None, st) for st in steps)]
    lead = list(range(len(shape) - 1))
    rng.shuffle(lead)
    view = view.permute(*lead, len(shape) - 1)  # the normalized (last) dim stays last
    offset = rng.randint(1, 80)
    index = torch.arange(320)
    a, b = (index.as_strided(view.shape, view.stride(), o) for o in (0, offset))
    return view.shape, view.stride(), offset, bool(torch.isin(a.flatten(), b.flatten()).any())


def test_same_layout_views_refused_exactly_when_they_share_elements():
    # C++ (eager) and Python (fake, i.e. torch.compile) checks against the ground truth.
    rng = random.Random(0)
    for _ in range(300):
        shape, stride, offset, shared = _random_same_layout_views(rng)
        buf = torch.randn(320)
        views = [buf.as_strided(shape, stride, o) for o in (0, offset)]
        with FakeTensorMode() as mode:
            fake_buf = mode.from_tensor(buf)
            fake_views = [fake_buf.as_strided(shape, stride, o) for o in (0, offset)]
        for (x, r), context in ((views, contextlib.nullcontext()), (fake_views, mode)):
            try:
                with context:
                    spyre_ops.fused_add_rms_norm_(x, r, shape[-1])
                refused = False
            except RuntimeError as e:
                assert "x and residual" in str(e), str(e)
                refused = True
            assert refused == shared, (shape, stride, offset)


def test_strided_views_of_different_buffers_are_computed():
    x_buf, r_buf = torch.randn(4, 96), torch.randn(4, 96)
    x, r = x_buf[:, 0:64], r_buf[:, 32:96]
    expected_out, expected_sum = spyre_ops.fused_add_rms_norm(x.clone(), r.clone(), 64)
    spyre_ops.fused_add_rms_norm_(x, r, 64)
    torch.testing.assert_close(x, expected_out, rtol=0, atol=0)
    torch.testing.assert_close(r, expected_sum, rtol=0, atol=0)


@pytest.mark.parametrize("backend,layout", [("aot_eager", "contiguous"), ("aot_eager", "strided"),
                                            ("inductor", "contiguous"), ("inductor", "strided")])
def test_overlap_in_a_later_call_is_refused_by_the_compiled_graph(backend, layout):
    # Compiled for a weight apart from out, called with a weight inside out (same
    # shapes and strides, so no recompile): the compiled graph refuses it as eager does.
    def make_out():
        return torch.randn(8, 8) if layout == "contiguous" else torch.randn(8, 16)[:, ::2]

    def apart_weight():
        return torch.randn(8) if layout == "contiguous" else torch.randn(16)[::2]

    fn = lambda x, w, out: spyre_ops.rms_norm(x, 8, w, 1e-5, out=out)  # noqa: E731
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    x = torch.randn(8, 8)
    out, w = make_out(), apart_weight()
    assert compiled(x, w, out) is out
    assert_close_to_ref(out, rms_norm_ref(x, [8], w, 1e-5))
    out = make_out()
    with pytest.raises(RuntimeError) as eager:
        fn(x, out[0], out)
    with pytest.raises(RuntimeError) as in_graph:
        compiled(x, out[0], out)
    assert "spyre::rms_norm.out: weight shares memory with out" in str(eager.value)
    assert str(eager.value) in str(in_graph.value)


# In-place calls whose inputs overlap only in a later call (same shapes and strides, so no
# recompile): (id, in-place call of (x, residual, weight), its functional form, inputs of the
# first call, inputs of the later call, the message).
_plain_ = lambda x, r, w: spyre_ops.fused_add_rms_norm_(x, r, x.shape[-1], w, 1e-5)  # noqa: E731
_plain = lambda x, r, w: spyre_ops.fused_add_rms_norm(x, r, x.shape[-1], w, 1e-5)  # noqa: E731
_gemma_ = lambda x, r, w: spyre_ops.gemma_fused_add_rms_norm_(x, r, x.shape[-1], w, 1e-6)  # noqa: E731
_gemma = lambda x, r, w: spyre_ops.gemma_fused_add_rms_norm(x, r, x.shape[-1], w, 1e-6)  # noqa: E731
LATER_INPLACE_OVERLAPS = [
    ("x-and-residual-rows", _plain_, _plain,
     lambda: (torch.randn(4, 8), torch.randn(4, 8), torch.rand(8)),
     lambda: (lambda b: (b[:4], b[2:], torch.rand(8)))(torch.randn(6, 8)),
     "spyre::fused_add_rms_norm_: x and residual overlap, and the op writes both"),
    ("x-and-residual-strided-columns", _plain_, _plain,
     lambda: (torch.randn(4, 96)[:, 0:64], torch.randn(4, 96)[:, 32:96], torch.rand(64)),
     lambda: (lambda b: (b[:, 0:64], b[:, 32:96], torch.rand(64)))(torch.randn(4, 96)),
     "spyre::fused_add_rms_norm_: x and residual may overlap"),
    ("weight-in-residual", _plain_, _plain,
     lambda: (torch.randn(4, 8), torch.randn(4, 8), torch.rand(8)),
     lambda: (lambda x, r: (x, r, r[1]))(torch.randn(4, 8), torch.randn(4, 8)),
     "spyre::fused_add_rms_norm_: weight shares memory with residual"),
    ("gemma-weight-in-x", _gemma_, _gemma,
     lambda: (torch.randn(4, 8), torch.randn(4, 8), torch.rand(8)),
     lambda: (lambda x, r: (x, r, x[2]))(torch.randn(4, 8), torch.randn(4, 8)),
     "spyre_ops::gemma_fused_add_rms_norm_: weight shares memory with x"),
]


@pytest.mark.parametrize("backend,dynamic", [("aot_eager", False), ("aot_eager", True), ("inductor", False)],
                         ids=["aot_eager", "aot_eager-dynamic", "inductor"])
@pytest.mark.parametrize("fn,functional,first,later,message", [c[1:] for c in LATER_INPLACE_OVERLAPS],
                         ids=[c[0] for c in LATER_INPLACE_OVERLAPS])
def test_inplace_overlap_in_a_later_call_is_refused_by_the_compiled_graph(fn, functional, first, later, message,
                                                                          backend, dynamic):
    # Functionalized (aot_eager), the in-place op runs on copies of x and residual, which
    # never overlap: the compiled graph checks the real tensors first, as eager mode does.
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=dynamic)
    x, r, w = first()
    expected_out, expected_sum = functional(x.clone(), r.clone(), w)
    compiled(x, r, w)
    torch.testing.assert_close(x, expected_out, rtol=0, atol=0)
    torch.testing.assert_close(r, expected_sum, rtol=0, atol=0)
    x, r, w = later()
    before = (x.clone(), r.clone())
    with pytest.raises(RuntimeError) as eager:
        fn(x, r, w)
    with pytest.raises(RuntimeError) as in_graph:
        compiled(x, r, w)
    assert counter.frame_count == 1  # the later call ran the first call's graph
    assert message in str(eager.value)
    assert str(eager.value) in str(in_graph.value)
    assert torch.equal(x, before[0]) and torch.equal(r, before[1])  # refused before writing


def test_overlap_refused_under_inductor_too():
    fn, make_args, message = OVERLAPS[0][1:]
    eager, compiled = _eager_and_compiled_errors(fn, *make_args(), backend="inductor")
    assert message in eager and message in compiled


def test_overlap_refused_under_dynamic_shapes():
    fn, make_args, message = OVERLAPS[2][1:]
    _, compiled = _eager_and_compiled_errors(fn, *make_args(), dynamic=True)
    assert message in compiled


def test_disjoint_views_of_one_buffer_are_fine():
    # weight and out in one storage without overlapping: computed, not refused.
    buf = torch.randn(9 * 8)
    w, out = buf[:8], buf[8:].view(8, 8)
    x = torch.randn(8, 8)
    expected = rms_norm_ref(x, [8], w.clone(), 1e-5)
    assert spyre_ops.rms_norm(x, 8, w, 1e-5, out=out) is out
    assert_close_to_ref(out, expected)


def test_weight_overlap_error_message_from_the_issue():
    x, out = torch.randn(64, 64), torch.randn(64, 64)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: weight shares memory with out.*weight.clone\(\)"):
        spyre_ops.rms_norm(x, 64, out[0], out=out)
    x, res = torch.randn(64, 64), torch.randn(64, 64)
    before = (x.clone(), res.clone())
    with pytest.raises(RuntimeError, match=r"weight shares memory with residual"):
        spyre_ops.fused_add_rms_norm_(x, res, 64, res[0])
    assert torch.equal(x, before[0]) and torch.equal(res, before[1])  # refused before writing


def test_noncontiguous_out_works_compiled():
    def f(x, w, out):
        return spyre_ops.rms_norm(x, 8, w, 1e-5, out=out)

    x, w = torch.randn(4, 8), torch.rand(8) + 0.5
    eager_out = torch.empty(8, 4).t()
    f(x, w, eager_out)
    compiled_out = torch.empty(8, 4).t()
    torch._dynamo.reset()
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(x, w, compiled_out)
    assert got.data_ptr() == compiled_out.data_ptr()
    assert_close_to_ref(compiled_out, rms_norm_ref(x, [8], w, 1e-5))
    assert torch.equal(eager_out, compiled_out)


@pytest.mark.parametrize("wrapper", ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_"])
def test_tensor_eps_is_refused_eager_and_compiled(wrapper):
    x = torch.randn(2, 8)
    eps = torch.tensor(1e-5)
    call = {
        "rms_norm": lambda x, eps: spyre_ops.rms_norm(x, 8, None, eps),
        "fused_add_rms_norm": lambda x, eps: spyre_ops.fused_add_rms_norm(x, x, 8, None, eps),
        "fused_add_rms_norm_": lambda x, eps: spyre_ops.fused_add_rms_norm_(x, x.clone(), 8, None, eps),
    }[wrapper]
    message = f"spyre_ops.{wrapper}: eps must be a float, got a Tensor"
    with pytest.raises(TypeError, match=re.escape(message)):
        call(x, eps)
    torch._dynamo.reset()
    with pytest.raises(Exception, match=re.escape(message)):
        torch.compile(call, backend="aot_eager", fullgraph=True)(x, eps)
    with pytest.raises(TypeError, match="eps must be a float or None"):
        spyre_ops.nn.RMSNorm(8, eps=eps)


def test_dynamic_shape_errors_print_sizes_not_symbols():
    def f(x, w):
        return spyre_ops.rms_norm(x, x.shape[-1], w, 1e-5)

    eager, compiled = _eager_and_compiled_errors(f, torch.randn(3, 16), torch.randn(15), dynamic=True)
    message = "spyre::rms_norm: weight has shape [15] but normalized_shape is [16]"
    assert message in eager and message in compiled

    def g(x, r):
        return spyre_ops.fused_add_rms_norm(x, r, x.shape[-1])

    eager, compiled = _eager_and_compiled_errors(g, torch.randn(3, 16), torch.randn(5, 16), dynamic=True)
    message = "spyre::fused_add_rms_norm: residual has shape [5, 16] but x has shape [3, 16]"
    assert message in eager and message in compiled
    assert not re.search(r"has shape \[[^\]]*\bs\d+", compiled)


def _all_dtypes():
    found = []
    for name in dir(torch):
        dtype = getattr(torch, name)
        if isinstance(dtype, torch.dtype) and dtype not in found:
            try:
                t = torch.empty(2, 8, dtype=dtype)
            except Exception:  # noqa: BLE001  (dtypes without a CPU tensor: nothing to pass)
                continue
            if not t.is_quantized:  # quantized tensors dispatch to a backend of their own
                found.append(dtype)
    return found


@pytest.mark.parametrize("dtype", [d for d in _all_dtypes() if d not in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16)], ids=str)
def test_dtype_names_are_the_same_in_eager_and_fake(dtype):
    x = torch.empty(2, 8, dtype=dtype)
    with pytest.raises(RuntimeError) as eager:
        ops.rms_norm(x, [8], None, 1e-5)
    with FakeTensorMode() as mode:
        with pytest.raises(RuntimeError) as fake:
            ops.rms_norm(mode.from_tensor(x), [8], None, 1e-5)
    expected = f"spyre::rms_norm: x must be a float32, float64, float16 or bfloat16 tensor, got {dtype}"
    assert str(eager.value).splitlines()[0] == expected
    assert str(fake.value).splitlines()[0] == expected


@pytest.mark.parametrize(("op", "args", "name"), [
    (ops.rms_norm.default, lambda: (None, [8]), "x"),
    (ops.fused_add_rms_norm.default, lambda: (None, torch.randn(2, 8), [8]), "x"),
    (ops.fused_add_rms_norm.default, lambda: (torch.randn(2, 8), None, [8]), "residual"),
    (ops.fused_add_rms_norm_.default, lambda: (torch.randn(2, 8), None, [8]), "residual"),
])
def test_none_tensor_names_the_argument(op, args, name):
    with pytest.raises(RuntimeError, match=rf"{op._schema.name}: {name} must be a tensor, got None"):
        op(*args())
