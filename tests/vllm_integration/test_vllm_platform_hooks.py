"""The functions an out-of-tree platform calls from its vLLM hooks: its
``import_ir_kernels()`` registers the spyre providers, its
``get_default_ir_op_priority(vllm_config)`` selects them; vLLM's KernelConfig then
gives the spyre provider first place, and the entry point registers the layer
classes when asked to (``SPYRE_OPS_VLLM_OOT_LAYERS=1``)."""

import inspect

import pytest

import spyre_ops.vllm as spyre_vllm


def _platform():
    from vllm.platforms.cpu import CpuPlatform

    class SpyreLikePlatform(CpuPlatform):
        @classmethod
        def import_ir_kernels(cls) -> None:
            import vllm.kernels  # noqa: F401

            spyre_vllm.import_ir_kernels()

        @classmethod
        def get_default_ir_op_priority(cls, vllm_config):
            return spyre_vllm.get_default_ir_op_priority(vllm_config)

    return SpyreLikePlatform()


def test_hook_signatures_are_vllms():
    from vllm.platforms.interface import Platform

    assert list(inspect.signature(Platform.import_ir_kernels).parameters) == []
    assert list(inspect.signature(Platform.get_default_ir_op_priority).parameters) == ["vllm_config"]
    assert list(inspect.signature(spyre_vllm.get_default_ir_op_priority).parameters) == ["vllm_config"]
    assert list(inspect.signature(spyre_vllm.import_ir_kernels).parameters) == []


def test_kernel_config_takes_the_platforms_priority(ir, monkeypatch):
    import vllm.platforms
    from vllm.config import VllmConfig
    from vllm.config.kernel import KernelConfig

    monkeypatch.setattr(vllm.platforms, "_current_platform", _platform())
    config = KernelConfig()
    config.set_platform_defaults(VllmConfig())
    assert config.ir_op_priority.rms_norm[0] == "spyre"
    assert config.ir_op_priority.fused_add_rms_norm[0] == "spyre"
    assert "spyre" not in config.ir_op_priority.gelu_and_mul_sparse
    with config.ir_op_priority.set_priority():  # validates every provider name (import_ir_kernels)
        assert ir.ops.rms_norm.get_priority()[0] == "spyre"


def test_import_ir_kernels_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(spyre_vllm, "_import_ir", lambda: None)
    monkeypatch.setattr(spyre_vllm, "reason_not_registered", "no vLLM IR here")
    with pytest.raises(RuntimeError, match="cannot register the spyre IR provider: no vLLM IR here"):
        spyre_vllm.import_ir_kernels()


ENTRY_POINT = """
import os
from vllm.plugins import load_general_plugins
from vllm.model_executor.custom_op import op_registry_oot
load_general_plugins()  # what every vLLM process does first
print("LAYERS", sorted(op_registry_oot))
"""


def test_entry_point_registers_the_layers_when_asked():
    import os

    from subprocess_python import run_python

    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", **{spyre_vllm.OOT_LAYERS_ENV: "1"})
    proc = run_python(ENTRY_POINT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = "['GemmaRMSNorm', 'RMSNorm', 'TPAwareGemmaRMSNorm', 'TPAwareRMSNorm']"
    assert f"LAYERS {expected}" in proc.stdout, proc.stdout


def test_register_leaves_the_layers_alone_by_default(ir, monkeypatch):
    from vllm.model_executor.custom_op import op_registry_oot

    monkeypatch.delenv(spyre_vllm.OOT_LAYERS_ENV, raising=False)
    before = dict(op_registry_oot)
    assert spyre_vllm.register()
    assert op_registry_oot == before
