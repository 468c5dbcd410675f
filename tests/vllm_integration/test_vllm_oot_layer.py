"""The route that does not need vLLM IR: ``CustomOp.register_oot(name="RMSNorm")``."""

import types

import pytest
import torch

import spyre_ops.vllm as spyre_vllm


@pytest.fixture
def oot_layer():
    from vllm.model_executor.custom_op import op_registry_oot

    assert "RMSNorm" not in op_registry_oot
    cls = spyre_vllm.register_oot_rms_norm()
    try:
        yield cls
    finally:
        op_registry_oot.pop("RMSNorm", None)  # leave vLLM's layer to the other tests


def _oot_platform():
    no = lambda: False  # noqa: E731
    return types.SimpleNamespace(is_rocm=no, is_cpu=no, is_tpu=no, is_xpu=no,
                                 is_out_of_tree=lambda: True)


def _config(custom_ops):
    from vllm.config import CompilationConfig, VllmConfig

    return VllmConfig(compilation_config=CompilationConfig(custom_ops=custom_ops))


def test_register_oot_is_idempotent(oot_layer):
    from vllm.model_executor.custom_op import op_registry_oot

    assert spyre_vllm.register_oot_rms_norm() is oot_layer
    assert op_registry_oot["RMSNorm"] is oot_layer


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_forward_oot_on_an_out_of_tree_platform(oot_layer, monkeypatch, dtype):
    import vllm.model_executor.custom_op as custom_op
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.layernorm import RMSNorm

    monkeypatch.setattr(custom_op, "current_platform", _oot_platform())
    with set_current_vllm_config(_config(["+RMSNorm"])):
        layer = RMSNorm(512, eps=1e-6, dtype=dtype)
    assert type(layer) is oot_layer
    assert layer._forward_method == layer.forward_oot
    with torch.no_grad():
        layer.weight.copy_(torch.randn(512, dtype=dtype))

    x, residual = torch.randn(9, 512, dtype=dtype), torch.randn(9, 512, dtype=dtype)
    x0, r0 = x.clone(), residual.clone()
    tol = {torch.float16: dict(atol=1e-2, rtol=2e-3), torch.bfloat16: dict(atol=1e-3, rtol=1.6e-2),
           torch.float32: dict(atol=1e-5, rtol=1.3e-6)}[dtype]
    with torch.profiler.profile() as prof:
        out = layer(x)
        fused_out, new_residual = layer(x, residual)
    ran = [e.name for e in prof.events() if e.cpu_parent is None]
    assert ran == ["spyre::rms_norm", "spyre::fused_add_rms_norm"], ran
    assert torch.equal(x, x0) and torch.equal(residual, r0)  # functional

    from vllm import ir

    native = ir.ops.rms_norm.impls["native"].impl_fn
    native_fused = ir.ops.fused_add_rms_norm.impls["native"].impl_fn
    torch.testing.assert_close(out, native(x, layer.weight.data, 1e-6), **tol)
    ref_out, ref_residual = native_fused(x, residual, layer.weight.data, 1e-6)
    torch.testing.assert_close(new_residual, ref_residual, **tol)
    torch.testing.assert_close(fused_out, ref_out, **tol)


def test_variance_size_falls_back_to_native(oot_layer, monkeypatch):
    import vllm.model_executor.custom_op as custom_op
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.layernorm import RMSNorm

    monkeypatch.setattr(custom_op, "current_platform", _oot_platform())
    with set_current_vllm_config(_config(["+RMSNorm"])):
        layer = RMSNorm(256, eps=1e-6, var_hidden_size=128)
    x = torch.randn(4, 256)
    out = layer.forward_oot(x)
    torch.testing.assert_close(out, layer.forward_native(x), rtol=0, atol=0)
    assert not torch.allclose(out, torch.ops.spyre.rms_norm(x, [256], layer.weight.data, 1e-6))


def test_not_enabled_means_native(oot_layer, monkeypatch):
    """Without "+RMSNorm" (or "all") the layer keeps vLLM's forward_native."""
    import vllm.model_executor.custom_op as custom_op
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.layernorm import RMSNorm

    monkeypatch.setattr(custom_op, "current_platform", _oot_platform())
    with set_current_vllm_config(_config(["-RMSNorm"])):
        layer = RMSNorm(256, eps=1e-6)
    assert type(layer) is oot_layer
    assert layer._forward_method != layer.forward_oot
