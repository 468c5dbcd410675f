"""The wrappers' direct op calls (spyre_ops._C.rms_norm & co., csrc/eager_calls.cpp).

For plain arguments the eager wrappers skip torch.ops' argument parsing and
make the dispatcher call from C++. These tests hold that entry to what
torch.ops does: the same results (bitwise), the same errors, the same autograd
graph, the same dispatcher path (dispatch modes, profiler, version counters),
and a refusal (NotImplemented, so the wrapper takes torch.ops) for every
argument it does not read itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import spyre_ops
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref
from spyre_ops import _C

EPS = 1e-6
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _inputs(dtype: torch.dtype, shape=(3, 5, 64), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    residual = torch.randn(shape, generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(dtype)
    return x, residual, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_direct_calls_equal_torch_ops_bitwise(dtype, with_weight):
    x, residual, w = _inputs(dtype)
    w = w if with_weight else None
    h = x.shape[-1]
    y = _C.rms_norm(x, h, w, EPS, None)
    assert torch.equal(y, torch.ops.spyre.rms_norm(x, [h], w, EPS))
    assert_close_to_ref(y, rms_norm_ref(x, [h], w, EPS))

    out = torch.full_like(x, float("nan"))
    assert _C.rms_norm(x, [h], w, EPS, out) is out
    assert torch.equal(out, y)

    y2, s2 = _C.fused_add_rms_norm(x, residual, (h,), w, EPS)
    ref_y, ref_s = torch.ops.spyre.fused_add_rms_norm(x, residual, [h], w, EPS)
    assert torch.equal(y2, ref_y) and torch.equal(s2, ref_s)
    ry, rs = fused_add_rms_norm_ref(x, residual, [h], w, EPS)
    assert_close_to_ref(y2, ry)
    assert_close_to_ref(s2, rs)

    xi, ri = x.clone(), residual.clone()
    assert _C.fused_add_rms_norm_(xi, ri, x.shape[-1:], w, EPS) is None
    assert torch.equal(xi, ref_y) and torch.equal(ri, ref_s)


def test_shapes_strides_and_mixed_weight_dtype():
    x, _, w = _inputs(torch.bfloat16, shape=(4, 6, 32))
    xt = x.transpose(0, 1)  # not contiguous
    w32 = w.float()
    w2 = torch.rand(4, 32) + 0.5
    y = spyre_ops.rms_norm(xt, [4, 32], w2, EPS)
    assert torch.equal(y, torch.ops.spyre.rms_norm(xt, [4, 32], w2, EPS))
    assert_close_to_ref(y, rms_norm_ref(xt, [4, 32], w2, EPS))
    out = torch.empty(6, 4, 32, dtype=torch.bfloat16).transpose(0, 1)  # non-contiguous out
    assert spyre_ops.rms_norm(xt.transpose(0, 1).contiguous(), 32, w32, EPS, out=out) is out
    assert torch.equal(out, torch.ops.spyre.rms_norm(x, [32], w32, EPS))
    # out=x: each row is read before it is written.
    xc = x.clone()
    assert spyre_ops.rms_norm(xc, 32, w32, EPS, out=xc) is xc
    assert torch.equal(xc, torch.ops.spyre.rms_norm(x, [32], w32, EPS))


def test_parameters_and_float_subclasses_are_plain():
    x, _, w = _inputs(torch.float32)
    p = torch.nn.Parameter(w.clone())

    class MyFloat(float):
        pass

    y = _C.rms_norm(x, [64], p, MyFloat(EPS), None)
    assert y is not NotImplemented
    assert torch.equal(y.detach(), torch.ops.spyre.rms_norm(x, [64], w, EPS))


class _Sub(torch.Tensor):
    pass


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen: list[object] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "case",
    ["subclass x", "subclass weight", "subclass out", "numpy int shape", "bool in shape", "tensor eps",
     "int eps", "str eps", "shape too large", "nested list"],
)
def test_anything_not_plain_is_left_to_torch_ops(case):
    x, _, w = _inputs(torch.float32)
    args = [x, [64], w, EPS, None]
    if case == "subclass x":
        args[0] = x.as_subclass(_Sub)
    elif case == "subclass weight":
        args[2] = w.as_subclass(_Sub)
    elif case == "subclass out":
        args[4] = torch.empty_like(x).as_subclass(_Sub)
    elif case == "numpy int shape":
        args[1] = [np.int64(64)]
    elif case == "bool in shape":
        args[1] = [True]
    elif case == "tensor eps":
        args[3] = torch.tensor(EPS)
    elif case == "int eps":
        args[3] = 0
    elif case == "str eps":
        args[3] = "1e-6"
    elif case == "shape too large":
        args[1] = [2**70]
    elif case == "nested list":
        args[1] = [[64]]
    assert _C.rms_norm(*args) is NotImplemented
    if case == "subclass out":
        return  # the fused ops have no out
    assert _C.fused_add_rms_norm(args[0], x, args[1], args[2], args[3]) is NotImplemented
    assert _C.fused_add_rms_norm_(args[0], x.clone(), args[1], args[2], args[3]) is NotImplemented


def test_wrong_arity_is_left_to_torch_ops():
    x, _, w = _inputs(torch.float32)
    assert _C.rms_norm(x, [64], w, EPS) is NotImplemented
    assert _C.fused_add_rms_norm(x, x, [64], w) is NotImplemented


def test_torch_function_modes_see_the_op():
    x, residual, w = _inputs(torch.float32)
    with _Recorder() as mode:
        assert _C.rms_norm(x, [64], w, EPS, None) is NotImplemented
        y = spyre_ops.rms_norm(x, 64, w, EPS)
        spyre_ops.fused_add_rms_norm(x, residual, 64, w, EPS)
    # torch.ops hands the mode the op (the packet, as called by the wrapper).
    assert torch.ops.spyre.rms_norm in mode.seen
    assert torch.ops.spyre.fused_add_rms_norm in mode.seen
    assert torch.equal(y, torch.ops.spyre.rms_norm(x, [64], w, EPS))


def test_subclass_takes_torch_ops_and_keeps_its_type():
    x, _, w = _inputs(torch.float32)
    y = spyre_ops.rms_norm(x.as_subclass(_Sub), 64, w, EPS)
    assert type(y) is _Sub
    assert torch.equal(y.as_subclass(torch.Tensor), torch.ops.spyre.rms_norm(x, [64], w, EPS))


class _DispatchLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[object] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_direct_calls_go_through_the_dispatcher():
    x, residual, w = _inputs(torch.float32)
    out = torch.empty_like(x)
    with _DispatchLog() as log:
        spyre_ops.rms_norm(x, 64, w, EPS)
        spyre_ops.rms_norm(x, 64, w, EPS, out=out)
        spyre_ops.fused_add_rms_norm(x, residual, 64, w, EPS)
        spyre_ops.fused_add_rms_norm_(x.clone(), residual.clone(), 64, w, EPS)
    spyre = torch.ops.spyre
    assert [op for op in log.ops if op.namespace == "spyre"] == [
        spyre.rms_norm.default, spyre.rms_norm.out, spyre.fused_add_rms_norm.default, spyre.fused_add_rms_norm_.default,
    ]


def test_profiler_records_the_op():
    x, _, w = _inputs(torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        spyre_ops.rms_norm(x, 64, w, EPS)
    assert "spyre::rms_norm" in {e.name for e in prof.events()}


def test_fake_tensors_work_through_the_wrapper():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 7, 64))
        y = spyre_ops.rms_norm(x, 64, None, EPS)
    assert y.shape == (2, 7, 64) and type(y).__name__ == "FakeTensor"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autograd_graph_is_the_same(dtype):
    x, residual, w = _inputs(dtype)
    grads = []
    for call in (
        lambda a, r, b: spyre_ops.rms_norm(a, 64, b, EPS),
        lambda a, r, b: torch.ops.spyre.rms_norm(a, [64], b, EPS),
        lambda a, r, b: sum(spyre_ops.fused_add_rms_norm(a, r, 64, b, EPS)),
        lambda a, r, b: sum(torch.ops.spyre.fused_add_rms_norm(a, r, [64], b, EPS)),
    ):
        a, r, b = (t.clone().requires_grad_() for t in (x, residual, w))
        y = call(a, r, b)
        assert y.grad_fn is not None
        y.square().sum().backward()
        grads.append((a.grad, r.grad, b.grad))
    for i in (0, 2):
        for got, expected in zip(grads[i], grads[i + 1]):
            assert (got is None and expected is None) or torch.equal(got, expected)
    if dtype == torch.float64:
        a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: spyre_ops.rms_norm(a, 64, b, EPS), (a, b))


def test_version_counters_are_bumped():
    x, residual, w = _inputs(torch.float32)
    out = torch.empty_like(x)
    v = out._version
    spyre_ops.rms_norm(x, 64, w, EPS, out=out)
    assert out._version > v
    xi, ri = x.clone(), residual.clone()
    vx, vr = xi._version, ri._version
    spyre_ops.fused_add_rms_norm_(xi, ri, 64, w, EPS)
    assert xi._version > vx and ri._version > vr


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value).split("\n")[0]


@pytest.mark.parametrize(
    "case",
    ["shape mismatch", "weight shape", "int dtype", "negative eps", "nan eps", "out dtype", "out shape",
     "out overlaps x", "weight is out", "empty shape", "requires grad with out", "residual shape",
     "inplace overlap"],
)
def test_errors_are_those_of_torch_ops(case):
    x, residual, w = _inputs(torch.float32)
    wrapper, direct = None, None
    if case == "shape mismatch":
        wrapper, direct = (lambda: spyre_ops.rms_norm(x, 32, w, EPS)), (lambda: torch.ops.spyre.rms_norm(x, [32], w, EPS))
    elif case == "weight shape":
        w2 = torch.ones(32)
        wrapper, direct = (lambda: spyre_ops.rms_norm(x, 64, w2, EPS)), (lambda: torch.ops.spyre.rms_norm(x, [64], w2, EPS))
    elif case == "int dtype":
        xi = torch.ones(2, 64, dtype=torch.int32)
        wrapper, direct = (lambda: spyre_ops.rms_norm(xi, 64, None, EPS)), (lambda: torch.ops.spyre.rms_norm(xi, [64], None, EPS))
    elif case == "negative eps":
        wrapper, direct = (lambda: spyre_ops.rms_norm(x, 64, w, -1.0)), (lambda: torch.ops.spyre.rms_norm(x, [64], w, -1.0))
    elif case == "nan eps":
        nan = float("nan")
        wrapper, direct = (lambda: spyre_ops.rms_norm(x, 64, w, nan)), (lambda: torch.ops.spyre.rms_norm(x, [64], w, nan))
    elif case == "out dtype":
        o = torch.empty_like(x, dtype=torch.float16)
        wrapper = lambda: spyre_ops.rms_norm(x, 64, w, EPS, out=o)  # noqa: E731
        direct = lambda: torch.ops.spyre.rms_norm.out(x, [64], w, EPS, out=o)  # noqa: E731
    elif case == "out shape":
        o = torch.empty(3, 64)
        wrapper = lambda: spyre_ops.rms_norm(x, 64, w, EPS, out=o)  # noqa: E731
        direct = lambda: torch.ops.spyre.rms_norm.out(x, [64], w, EPS, out=o)  # noqa: E731
    elif case == "out overlaps x":
        buf = torch.randn(4 * 64 + 1)
        xs, o = buf[: 4 * 64].view(4, 64), buf[1:].view(4, 64)
        wrapper = lambda: spyre_ops.rms_norm(xs, 64, None, EPS, out=o)  # noqa: E731
        direct = lambda: torch.ops.spyre.rms_norm.out(xs, [64], None, EPS, out=o)  # noqa: E731
    elif case == "weight is out":
        x1, w1 = torch.randn(64), torch.randn(64)
        wrapper = lambda: spyre_ops.rms_norm(x1, 64, w1, EPS, out=w1)  # noqa: E731
        direct = lambda: torch.ops.spyre.rms_norm.out(x1, [64], w1, EPS, out=w1)  # noqa: E731
    elif case == "empty shape":
        wrapper, direct = (lambda: spyre_ops.rms_norm(x, [], w, EPS)), (lambda: torch.ops.spyre.rms_norm(x, [], w, EPS))
    elif case == "requires grad with out":
        xr, o = x.clone().requires_grad_(), torch.empty_like(x)
        wrapper = lambda: spyre_ops.rms_norm(xr, 64, w, EPS, out=o)  # noqa: E731
        direct = lambda: torch.ops.spyre.rms_norm.out(xr, [64], w, EPS, out=o)  # noqa: E731
    elif case == "residual shape":
        r = torch.randn(3, 5, 32)
        wrapper = lambda: spyre_ops.fused_add_rms_norm(x, r, 64, w, EPS)  # noqa: E731
        direct = lambda: torch.ops.spyre.fused_add_rms_norm(x, r, [64], w, EPS)  # noqa: E731
    elif case == "inplace overlap":
        xi = x.clone()
        wrapper = lambda: spyre_ops.fused_add_rms_norm_(xi, xi, 64, w, EPS)  # noqa: E731
        direct = lambda: torch.ops.spyre.fused_add_rms_norm_(xi, xi, [64], w, EPS)  # noqa: E731
    got, expected = _error(wrapper), _error(direct)
    assert got == expected
    assert "spyre" in got[1]
