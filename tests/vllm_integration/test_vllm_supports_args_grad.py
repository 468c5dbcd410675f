"""The fused provider works in place, which autograd cannot differentiate: with
grad mode on, supports_args refuses arguments that require grad, so vLLM falls
back to its native implementation instead of the kernel raising."""

from __future__ import annotations

import pytest
import torch

import spyre_ops.vllm as spyre_vllm


@pytest.mark.parametrize("which", ["x", "x_residual", "weight"])
def test_fused_supports_args_refuses_grad(ir, which):
    x, residual, weight, eps = ir.ops.fused_add_rms_norm.generate_inputs(
        num_tokens=4, hidden_size=64, dtype=torch.float32
    )
    assert spyre_vllm.fused_add_rms_norm_supports_args(x, residual, weight, eps)
    {"x": x, "x_residual": residual, "weight": weight}[which].requires_grad_()
    assert not spyre_vllm.fused_add_rms_norm_supports_args(x, residual, weight, eps)
    with torch.no_grad():
        assert spyre_vllm.fused_add_rms_norm_supports_args(x, residual, weight, eps)
    # Dispatch then picks another provider, and the call computes.
    with ir.ops.fused_add_rms_norm.set_priority(["spyre", "native"]):
        assert ir.ops.fused_add_rms_norm.dispatch(x, residual, weight, eps).provider != "spyre"
        out, new_residual = ir.ops.fused_add_rms_norm(x.detach().clone().requires_grad_(), residual.detach(),
                                                      weight.detach(), eps)
    assert out.shape == x.shape


def test_rms_norm_supports_args_keeps_grad(ir):
    # The functional provider is differentiable: it keeps serving such inputs.
    x, weight, eps = ir.ops.rms_norm.generate_inputs(num_tokens=4, hidden_size=64, dtype=torch.float32)
    x.requires_grad_()
    assert spyre_vllm.rms_norm_supports_args(x, weight, eps)
