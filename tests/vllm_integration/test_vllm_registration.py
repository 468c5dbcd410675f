"""register(): idempotent, never overrides someone else's "spyre" provider;
default_ir_op_priority(): the priority a platform hands to vLLM."""

import subprocess
import sys

import torch

import spyre_ops.vllm as spyre_vllm


def test_register_is_idempotent(ir):
    before = dict(ir.ops.rms_norm.impls)
    assert spyre_vllm.register() is True
    assert spyre_vllm.register() is True
    assert spyre_vllm.reason_not_registered is None
    assert ir.ops.rms_norm.impls == before
    assert ir.ops.rms_norm.impls["spyre"].impl_fn is spyre_vllm.spyre_rms_norm
    assert ir.ops.fused_add_rms_norm.impls["spyre"].inplace
    assert not ir.ops.rms_norm.impls["spyre"].inplace
    assert spyre_vllm.is_registered()


def test_default_ir_op_priority(ir):
    priority = spyre_vllm.default_ir_op_priority(None)
    assert priority.rms_norm == ["spyre", "native"]
    assert priority.fused_add_rms_norm == ["spyre", "native"]
    assert priority.gelu_and_mul_sparse == ["native"]
    x, weight, eps = ir.ops.rms_norm.generate_inputs(num_tokens=4, hidden_size=256,
                                                     dtype=torch.float16)
    with priority.set_priority():  # how vLLM installs a KernelConfig's priorities
        assert ir.ops.rms_norm.dispatch(x, weight, eps).provider == "spyre"
    assert ir.ops.rms_norm.get_priority() != ["spyre", "native"]  # restored on exit


FOREIGN = """
import torch
from vllm import ir

# someone else's "spyre" provider for the second op only: spyre_ops must register neither
@ir.ops.fused_add_rms_norm.register_impl("spyre")
def other(x: torch.Tensor, x_residual: torch.Tensor, weight: torch.Tensor | None,
          epsilon: float, variance_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return ir.ops.fused_add_rms_norm.impls["native"].impl_fn(x, x_residual, weight, epsilon)

import spyre_ops.vllm as v
print("REGISTERED", v.register())
print("REASON", v.reason_not_registered)
print("KEPT", ir.ops.fused_add_rms_norm.impls["spyre"] is other)  # register_impl returns the impl
print("RMS_NORM_SPYRE", "spyre" in ir.ops.rms_norm.impls)
"""


def test_foreign_spyre_provider_is_left_alone():
    proc = subprocess.run([sys.executable, "-c", FOREIGN], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "REGISTERED False" in proc.stdout
    assert "fused_add_rms_norm already has a provider named 'spyre'" in proc.stdout
    assert "KEPT True" in proc.stdout
    assert "RMS_NORM_SPYRE False" in proc.stdout
