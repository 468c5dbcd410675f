"""Bad input gives a clear RuntimeError naming the argument, never a crash or a
wrong answer, and the same message in eager mode (C++ checks) and under
FakeTensor tracing (Python fake kernels)."""

from __future__ import annotations

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import spyre_ops  # noqa: F401
from spyre_ops._variants import VARIANTS, Variant

ops = torch.ops.spyre


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype) if dtype.is_floating_point else torch.ones(*shape, dtype=dtype)


# (id, op, args builder, expected message fragment)
CASES = [
    ("ns-empty", ops.rms_norm.default, lambda: (t(4, 8), [], None, 1e-5),
     "normalized_shape must name at least one trailing dimension of x, got []"),
    ("ns-mismatch", ops.rms_norm.default, lambda: (t(4, 8), [7], None, 1e-5),
     "normalized_shape [7] does not match the trailing dimensions of x, whose shape is [4, 8]"),
    ("ns-too-long", ops.rms_norm.default, lambda: (t(8), [1, 8], None, 1e-5),
     "normalized_shape [1, 8] does not match the trailing dimensions of x, whose shape is [8]"),
    ("weight-shape", ops.rms_norm.default, lambda: (t(4, 8), [8], t(4), 1e-5),
     "weight has shape [4] but normalized_shape is [8]"),
    ("weight-2d", ops.rms_norm.default, lambda: (t(4, 8), [8], t(1, 8), 1e-5),
     "weight has shape [1, 8] but normalized_shape is [8]"),
    ("x-int", ops.rms_norm.default, lambda: (t(4, 8, dtype=torch.int32), [8], None, 1e-5),
     "x must be a float32, float64, float16 or bfloat16 tensor, got torch.int32"),
    ("x-bool", ops.rms_norm.default, lambda: (t(4, 8, dtype=torch.bool), [8], None, 1e-5),
     "x must be a float32, float64, float16 or bfloat16 tensor, got torch.bool"),
    ("x-complex", ops.rms_norm.default, lambda: (torch.randn(4, 8, dtype=torch.complex64), [8], None, 1e-5),
     "x must be a float32, float64, float16 or bfloat16 tensor, got torch.complex64"),
    ("weight-int", ops.rms_norm.default, lambda: (t(4, 8), [8], t(8, dtype=torch.int64), 1e-5),
     "weight must be a float32, float64, float16 or bfloat16 tensor, got torch.int64"),
    ("eps-negative", ops.rms_norm.default, lambda: (t(4, 8), [8], None, -1.0),
     "eps must be finite and non-negative, got -1"),
    ("eps-nan", ops.rms_norm.default, lambda: (t(4, 8), [8], None, math.nan),
     "eps must be finite and non-negative, got nan"),
    ("eps-inf", ops.rms_norm.default, lambda: (t(4, 8), [8], None, math.inf),
     "eps must be finite and non-negative, got inf"),
    ("residual-shape", ops.fused_add_rms_norm.default, lambda: (t(4, 8), t(3, 8), [8], None, 1e-5),
     "residual has shape [3, 8] but x has shape [4, 8]"),
    ("residual-dtype", ops.fused_add_rms_norm.default,
     lambda: (t(4, 8), t(4, 8, dtype=torch.float16), [8], None, 1e-5),
     "residual has dtype torch.float16 but x has dtype torch.float32"),
    ("inplace-residual-shape", ops.fused_add_rms_norm_.default,
     lambda: (t(4, 8), t(4, 1), [8], None, 1e-5),
     "residual has shape [4, 1] but x has shape [4, 8]"),
    ("inplace-ns", ops.fused_add_rms_norm_.default, lambda: (t(4, 8), t(4, 8), [4], None, 1e-5),
     "normalized_shape [4] does not match the trailing dimensions of x, whose shape is [4, 8]"),
    ("fused-eps", ops.fused_add_rms_norm.default, lambda: (t(4, 8), t(4, 8), [8], None, -0.5),
     "eps must be finite and non-negative, got -0.5"),
]


def in_family(op: torch._ops.OpOverload, variant: Variant) -> torch._ops.OpOverload:
    """The op of ``variant`` that ``op`` (a spyre:: op) is in its own family."""
    packet = variant.packet(op._schema.name.split("::")[1])
    return getattr(packet, op._overloadname)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.namespace)
@pytest.mark.parametrize("op,make_args,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_eager_and_fake_raise_the_same_error(op, make_args, message, variant):
    op = in_family(op, variant)
    args = make_args()
    with pytest.raises(RuntimeError) as eager:
        op(*args)
    assert message in str(eager.value)
    assert str(op._schema.name) + ": " in str(eager.value)

    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(RuntimeError) as fake:
            op(*fake_args)
    assert message in str(fake.value)


def test_meta_tensors_get_the_fake_kernel():
    y = ops.rms_norm(torch.empty(3, 8, device="meta"), [8], None, 1e-5)
    assert y.device.type == "meta" and y.shape == (3, 8)
    with pytest.raises(RuntimeError, match="weight has shape"):
        ops.rms_norm(torch.empty(3, 8, device="meta"), [8], torch.empty(9, device="meta"), 1e-5)


def test_devices_must_match():
    # x on cpu with weight on meta: a device mismatch, not a crash.
    with pytest.raises(RuntimeError, match="weight is on meta but x is on cpu"):
        ops.rms_norm(t(4, 8), [8], torch.empty(8, device="meta"), 1e-5)
    with pytest.raises(RuntimeError, match="residual is on meta but x is on cpu"):
        ops.fused_add_rms_norm(t(4, 8), torch.empty(4, 8, device="meta"), [8], None, 1e-5)


def test_inplace_refuses_overlapping_tensors():
    x = t(4, 8)
    with pytest.raises(RuntimeError, match="spyre::fused_add_rms_norm_: x and residual overlap, and the op writes both"):
        ops.fused_add_rms_norm_(x, x, [8], None, 1e-5)
    with pytest.raises(RuntimeError, match=r"spyre::fused_add_rms_norm_: x overlaps itself \(an expanded tensor\)"):
        ops.fused_add_rms_norm_(t(1, 8).expand(4, 8), t(4, 8), [8], None, 1e-5)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: out overlaps itself \(an expanded tensor\)"):
        ops.rms_norm.out(t(4, 8), [8], None, 1e-5, out=t(1, 8).expand(4, 8))


def test_wrappers_accept_int_shape_and_validate():
    assert spyre_ops.rms_norm(t(2, 8), 8).shape == (2, 8)
    with pytest.raises(RuntimeError, match="does not match the trailing dimensions"):
        spyre_ops.rms_norm(t(2, 8), 9)


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, backend="eager", fullgraph=True)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_out_that_is_not_a_tensor_names_the_argument(compiled):
    call = lambda x: spyre_ops.rms_norm(x, 8, None, 1e-5, out=[1])  # noqa: E731
    with pytest.raises(Exception, match=r"spyre_ops.rms_norm: out must be a tensor or None, got list"):
        (_compiled(call) if compiled else call)(t(2, 8))


def test_normalized_shape_as_an_integer_tensor_is_one_dim():
    x = t(3, 8)
    expected = spyre_ops.rms_norm(x, 8)
    assert torch.equal(spyre_ops.rms_norm(x, torch.tensor(8)), expected)
    assert torch.equal(spyre_ops.rms_norm(x, torch.tensor([8])), expected)
    with pytest.raises(TypeError, match=r"spyre_ops.rms_norm: normalized_shape must be an int or a sequence "
                       r"of ints, got a 0-dim torch.float32 tensor"):
        spyre_ops.rms_norm(x, torch.tensor(8.0))
    with pytest.raises(TypeError, match=r"spyre_ops.fused_add_rms_norm: normalized_shape must be an int or a "
                       r"sequence of ints, got float"):
        spyre_ops.fused_add_rms_norm(x, x, 8.0)


def test_jit_trace_of_a_shape_argument():
    # torch.jit.trace hands x.shape[-1] over as a 0-dim tensor.
    x = t(3, 8)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(lambda a: spyre_ops.rms_norm(a, a.shape[-1]), (x,))
    assert torch.equal(traced(x), spyre_ops.rms_norm(x, 8))


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
def test_strided_nested_weight_is_refused_by_name(mode):
    weight = torch.nested.nested_tensor([torch.randn(8), torch.randn(8)])
    context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    message = "spyre::{}: weight is a nested tensor with the strided layout; only jagged nested tensors"
    with context():
        with pytest.raises(RuntimeError, match=message.format("rms_norm")):
            spyre_ops.rms_norm(t(2, 8), 8, weight)
        with pytest.raises(RuntimeError, match=message.format("fused_add_rms_norm")):
            spyre_ops.fused_add_rms_norm(t(2, 8), t(2, 8), 8, weight)
        with pytest.raises(RuntimeError, match=message.format("rms_norm.out")):
            spyre_ops.rms_norm(t(2, 8), 8, weight, out=t(2, 8))


def test_jagged_ragged_dim_is_a_runtime_error_naming_it():
    nt = torch.nested.nested_tensor([torch.randn(2, 8), torch.randn(3, 8)], layout=torch.jagged)
    for call in (lambda: spyre_ops.rms_norm(nt, [nt.shape[1], 8]),
                 lambda: spyre_ops.fused_add_rms_norm(nt, nt, [nt.shape[1], 8])):
        with pytest.raises(RuntimeError, match=r"x is a jagged nested tensor whose ragged dimension \(dim 1\) is "
                           "among the normalized dimensions"):
            call()
