"""A call of a spyre op on spyre tensors never leaves the device.

Measured with the emulator's instrument, spyre_ops.emulator.transfers(): inside
one call, 0 host<->device copies and 0 ops outside the list of ops torch-spyre
runs on the device. The instrument itself is checked first: it must see the
transfers and fallbacks it exists to catch.
"""

from __future__ import annotations

import pytest
import torch

import spyre_ops
import spyre_ops.emulator as emulator

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def test_instrument_counts_transfers(spyre_device):
    x = torch.randn(8, 64)
    with emulator.transfers() as t:
        d = x.to(spyre_device)
        back = d.cpu()
        value = d[0, 0].item()
    assert (t.host_to_device, t.device_to_host) == (1, 2)
    assert t.host_to_device_bytes == x.numel() * 4
    assert t.device_to_host_bytes == x.numel() * 4 + 4
    assert torch.equal(back, x) and value == x[0, 0].item()


def test_instrument_counts_fallbacks(spyre_device):
    x = torch.randn(8, 64, device=spyre_device)
    with emulator.transfers() as t:
        torch.sort(x, dim=-1)  # not an op torch-spyre runs on the device
        torch.exp(x)  # one that it does
    assert t.fallbacks == {"aten::sort": 1}
    assert t.ops["aten::exp"] == 1
    assert (t.host_to_device, t.device_to_host) == (0, 0)  # the fallback's own copies are not transfers


def _inputs(dtype, hidden, weight_dtype, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(16, hidden, generator=g) * 100).to(dtype).to(device)
    residual = torch.randn(16, hidden, generator=g).to(dtype).to(device)
    w = None if weight_dtype is None else torch.rand(hidden, generator=g).to(weight_dtype).to(device)
    return x, residual, w


@pytest.mark.parametrize("compute", [torch.float16, torch.float32])
@pytest.mark.parametrize("weight_dtype", [None, "same", torch.float32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_transfer_and_no_fallback_per_call(spyre_device, dtype, weight_dtype, compute):
    wd = dtype if weight_dtype == "same" else weight_dtype
    x, residual, w = _inputs(dtype, 320, wd, spyre_device)
    calls = {
        "rms_norm": lambda: torch.ops.spyre.rms_norm(x, [320], w, 1e-6),
        "fused_add_rms_norm": lambda: torch.ops.spyre.fused_add_rms_norm(x, residual, [320], w, 1e-6),
        "fused_add_rms_norm_": lambda: torch.ops.spyre.fused_add_rms_norm_(
            x.clone(), residual.clone(), [320], w, 1e-6
        ),
        "non-contiguous rms_norm": lambda: torch.ops.spyre.rms_norm(x.t().contiguous().t()[:, :], [320], w, 1e-6),
    }
    with spyre_ops.spyre.use_compute_dtype(compute):
        if w is not None and w.dtype != x.dtype:
            # A weight of another dtype is brought to x's once per weight and version, through the
            # host (spyre_ops.spyre.weights); the calls after that one copy nothing.
            with emulator.transfers() as t:
                torch.ops.spyre.rms_norm(x, [320], w, 1e-6)
            assert (t.host_to_device, t.device_to_host) == (1, 1), t
        for name, call in calls.items():
            with emulator.transfers() as t:
                call()
            assert (t.host_to_device, t.device_to_host) == (0, 0), (name, t)
            assert not t.fallbacks, (name, dict(t.fallbacks))
            assert t.launches == 1 and t.graph_ops, name  # the instrument did see the kernel's graph


def test_the_kernel_ran_not_a_fallback(spyre_device):
    # The spyre op itself has a PrivateUse1 kernel: it never reaches the
    # fallback (which would record "spyre::rms_norm"), and its steps are the
    # device ops of the Spyre formula, inside one launched graph.
    x, _, w = _inputs(torch.float16, 128, torch.float16, spyre_device)
    with emulator.transfers() as t:
        torch.ops.spyre.rms_norm(x, [128], w, 1e-6)
    assert "spyre::rms_norm" not in t.ops and "spyre::rms_norm" not in t.graph_ops
    for op in ("aten::amax", "aten::mean", "aten::rsqrt"):
        assert t.graph_ops[op] == 1, dict(t.graph_ops)
    assert "aten::pow" not in t.graph_ops and "aten::linalg_vector_norm" not in t.graph_ops


def test_only_the_last_dimension(spyre_device):
    x = torch.randn(4, 8, 16, device=spyre_device)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm: on Spyre only the last dimension can be normalized, "
                       r"so normalized_shape must have exactly one element, got \[8, 16\]"):
        torch.ops.spyre.rms_norm(x, [8, 16])
    with pytest.raises(RuntimeError, match=r"spyre::fused_add_rms_norm: on Spyre only the last dimension"):
        torch.ops.spyre.fused_add_rms_norm(x, x.clone(), [8, 16])
    with pytest.raises(RuntimeError, match=r"spyre::fused_add_rms_norm_: on Spyre only the last dimension"):
        torch.ops.spyre.fused_add_rms_norm_(x, x.clone(), [8, 16])


@pytest.mark.parametrize("op_name", ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_"])
def test_fake_kernels_refuse_more_than_the_last_dimension_too(spyre_device, op_name):
    # Under torch.compile the error comes at trace time, with the eager message.
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = getattr(torch.ops.spyre, op_name).default
    x = torch.randn(4, 8, 16, device=spyre_device)
    args = (x,) if op_name == "rms_norm" else (x, x.clone())
    with pytest.raises(RuntimeError) as eager:
        op(*args, [8, 16])
    with FakeTensorMode() as mode:
        fake_args = tuple(mode.from_tensor(a) for a in args)
        with pytest.raises(RuntimeError) as fake:
            op(*fake_args, [8, 16])
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]
    assert "on Spyre only the last dimension can be normalized" in str(fake.value)
    # The same shapes are fine on the CPU, fake or not.
    cpu_args = tuple(a.cpu() for a in args)
    with FakeTensorMode() as mode:
        op(*(mode.from_tensor(a) for a in cpu_args), [8, 16])


@pytest.mark.parametrize(
    "make_args",
    [
        lambda d: (torch.randn(4, 16, device=d).to(torch.int32), [16], None),
        lambda d: (torch.randn(4, 16, device=d), [8], None),
        lambda d: (torch.randn(4, 16, device=d), [16], torch.ones(16)),  # weight on the host
        lambda d: (torch.randn(4, 16, device=d), [16], torch.ones(8, device=d)),
    ],
    ids=["int dtype", "shape mismatch", "weight on host", "weight shape"],
)
def test_argument_errors_match_the_cpu_kernel(spyre_device, make_args):
    x, shape, w = make_args(spyre_device)
    with pytest.raises(RuntimeError) as on_spyre:
        torch.ops.spyre.rms_norm(x, shape, w)
    x_cpu = x.cpu()
    w_cpu = None if w is None else (w.cpu() if w.device.type == "spyre" else w.to(spyre_device))
    with pytest.raises(RuntimeError) as on_cpu:
        torch.ops.spyre.rms_norm(x_cpu, shape, w_cpu)
    first_line = lambda e: str(e.value).splitlines()[0].replace("spyre:0", "DEV").replace("cpu", "DEV")  # noqa: E731
    assert first_line(on_spyre) == first_line(on_cpu)
