"""vLLM's norm layers replaced by ``register_oot_layers()`` (spyre_ops.vllm_layers):
vLLM builds the library's class for each, whose ``forward_oot`` (on an out-of-tree
platform, here a stand-in) makes one library call per norm and matches vLLM's own
layer within vLLM IR's tolerance; the Gemma layers call the Gemma op with the raw
weight (no float32 ``1 + w`` per call), also from ``forward_native`` when vLLM IR
selects the spyre provider.
"""

import types

import pytest
import torch
from reference import assert_close_to_ref

import spyre_ops.vllm as spyre_vllm
from spyre_ops import vllm_layers

LAYERNORM = "vllm.model_executor.layers.layernorm"
TRANSFORMERS = "vllm.model_executor.models.transformers.fusers.rms_norm"
HW_AGNOSTIC = "vllm.model_executor.hw_agnostic.layers.layernorm"
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
EPS = 1e-6
HIDDEN = 512

#: entry -> (library ops run by a plain and a fused call, vLLM's class)
GEMMA_OPS = ["spyre_ops::gemma_rms_norm", "spyre_ops::gemma_fused_add_rms_norm"]
PLAIN_OPS = ["spyre::rms_norm", "spyre::fused_add_rms_norm"]
CASES = {
    f"{LAYERNORM}.RMSNorm": PLAIN_OPS,
    f"{LAYERNORM}.GemmaRMSNorm": GEMMA_OPS,
    f"{TRANSFORMERS}.TPAwareRMSNorm": PLAIN_OPS,
    f"{TRANSFORMERS}.TPAwareGemmaRMSNorm": GEMMA_OPS,
    f"{HW_AGNOSTIC}.RMSNorm": PLAIN_OPS,
}


def _vllm_class(qualname: str) -> type:
    import importlib

    module, name = qualname.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _registries():
    from vllm.model_executor import custom_op
    from vllm.model_executor.hw_agnostic import custom_op as hw_custom_op

    return custom_op.op_registry_oot, hw_custom_op.op_registry_oot


@pytest.fixture
def layers():
    """Every entry registered; vLLM's own classes back for the other tests afterwards."""
    names = {layer.name for layer in vllm_layers.LAYERS}
    for registry in _registries():
        assert not names & set(registry), registry
    registered = spyre_vllm.register_oot_layers()
    try:
        yield registered
    finally:
        for registry in _registries():
            for name in names:
                registry.pop(name, None)


@pytest.fixture
def oot_platform(monkeypatch):
    """vLLM's CustomOps dispatch as on an out-of-tree platform (such as Spyre)."""
    import vllm.model_executor.custom_op as custom_op
    import vllm.model_executor.hw_agnostic.custom_op as hw_custom_op

    no = lambda: False  # noqa: E731
    platform = types.SimpleNamespace(is_rocm=no, is_cpu=no, is_tpu=no, is_xpu=no,
                                     is_out_of_tree=lambda: True)
    monkeypatch.setattr(custom_op, "current_platform", platform)
    monkeypatch.setattr(hw_custom_op, "current_platform", platform)


def _config(custom_ops):
    from vllm.config import CompilationConfig, VllmConfig

    return VllmConfig(compilation_config=CompilationConfig(custom_ops=custom_ops))


def _build(qualname: str, dtype: torch.dtype, custom_ops=("all",)):
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(_config(list(custom_ops))), torch.device("cpu"):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # as vLLM's model loader does: the weight's dtype
        try:
            layer = _vllm_class(qualname)(HIDDEN, eps=EPS)
        finally:
            torch.set_default_dtype(previous)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(HIDDEN, dtype=dtype) * 0.5)
    return layer


def _top_level(fn) -> list[str]:
    with torch.profiler.profile() as prof:
        fn()
    return [e.name for e in prof.events() if e.cpu_parent is None]


def _tolerance(dtype):
    from vllm import ir

    return ir.ops.rms_norm.get_tolerance(dtype)


def _vllm_reference(cls: type, layer, x, residual=None):
    """vLLM's own layer's forward_native on the same weights."""
    return cls.forward_native(layer, x, residual) if residual is not None else cls.forward_native(layer, x)


def test_every_entry_is_registered_as_a_subclass_of_vllms_class(layers):
    assert set(layers) == set(CASES)
    for qualname, cls in layers.items():
        assert issubclass(cls, _vllm_class(qualname))
        assert cls.name == qualname.rsplit(".", 1)[1]
    assert spyre_vllm.register_oot_layers() == layers  # idempotent
    in_tree, hw = _registries()
    assert hw["RMSNorm"] is layers[f"{HW_AGNOSTIC}.RMSNorm"]
    assert in_tree["RMSNorm"] is layers[f"{LAYERNORM}.RMSNorm"]


def test_hw_agnostic_override_subclasses_what_resolve_returns(layers, monkeypatch):
    """An override of the hw-agnostic path must subclass the class it resolves to."""
    import vllm.envs as envs

    monkeypatch.setattr(envs, "VLLM_USE_HW_AGNOSTIC", True, raising=False)
    try:
        from vllm.model_executor.hw_agnostic import resolve
    except ImportError:  # vLLM 0.32: the Transformers backend's own resolver
        from vllm.model_executor.models.transformers.layers import _resolve as resolve
    assert issubclass(layers[f"{HW_AGNOSTIC}.RMSNorm"], resolve("layernorm", "RMSNorm"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qualname", list(CASES), ids=lambda q: q.rsplit(".", 2)[-2] + "." + q.rsplit(".", 1)[1])
def test_forward_oot_is_one_library_call_and_matches_vllm(layers, oot_platform, qualname, dtype):
    layer = _build(qualname, dtype)
    assert type(layer) is layers[qualname]
    assert layer._forward_method == layer.forward_oot
    torch.manual_seed(0)
    x, residual = torch.randn(9, HIDDEN, dtype=dtype), torch.randn(9, HIDDEN, dtype=dtype)
    x0, r0 = x.clone(), residual.clone()
    outs = {}
    ran = _top_level(lambda: outs.update(plain=layer(x), fused=layer(x, residual)))
    assert ran == CASES[qualname], ran  # no 1 + w, no cast: the op alone
    assert torch.equal(x, x0) and torch.equal(residual, r0)  # functional, as vLLM's

    cls = _vllm_class(qualname)
    tol = _tolerance(dtype)
    torch.testing.assert_close(outs["plain"], _vllm_reference(cls, layer, x), **tol)
    ref_out, ref_residual = _vllm_reference(cls, layer, x, residual)
    torch.testing.assert_close(outs["fused"][1], ref_residual, **tol)
    torch.testing.assert_close(outs["fused"][0], ref_out, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gemma_layer_matches_a_float64_reference(layers, oot_platform, dtype):
    """(1 + w) * x / sqrt(mean(x^2) + eps) with the raw weight, rounded once."""
    layer = _build(f"{LAYERNORM}.GemmaRMSNorm", dtype)
    x = torch.randn(17, HIDDEN, dtype=dtype) * 3
    x64, w64 = x.double(), layer.weight.data.double()
    ref = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + EPS) * (1 + w64)
    assert_close_to_ref(layer(x), ref.to(dtype))


GEMMA_GRID = [(t, h, d) for t in (1, 17, 512) for h in (640, 2048) for d in DTYPES]


@pytest.mark.parametrize("case", GEMMA_GRID, ids=lambda c: f"{c[0]}x{c[1]}-{str(c[2])[6:]}")
def test_gemma_layer_conformance_on_vllms_inputs(layers, oot_platform, case):
    """vLLM's IR checks applied to the Gemma layer: inputs from ``op.generate_inputs``,
    compared at ``op.get_tolerance`` with what vLLM's GemmaRMSNorm computes (native IR
    op, float32 ``1 + w``)."""
    from vllm import ir

    tokens, hidden, dtype = case
    torch.manual_seed(tokens * 7919 + hidden)
    x, weight, _ = ir.ops.rms_norm.generate_inputs(num_tokens=tokens, hidden_size=hidden, dtype=dtype)
    r, _, _, _ = ir.ops.fused_add_rms_norm.generate_inputs(num_tokens=tokens, hidden_size=hidden, dtype=dtype)
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(_config(["all"])):
        layer = _vllm_class(f"{LAYERNORM}.GemmaRMSNorm")(hidden, eps=EPS)
    layer.weight.data = weight
    tol = ir.ops.rms_norm.get_tolerance(dtype)
    native, native_fused = ir.ops.rms_norm.impls["native"].impl_fn, ir.ops.fused_add_rms_norm.impls["native"].impl_fn
    torch.testing.assert_close(layer(x), native(x, weight.float() + 1.0, EPS), **tol)
    out, residual = layer(x, r)
    ref_out, ref_residual = native_fused(x, r, weight.float() + 1.0, EPS)
    assert torch.equal(residual, ref_residual)  # x + residual, rounded once
    torch.testing.assert_close(out, ref_out, **ir.ops.fused_add_rms_norm.get_tolerance(dtype))


def test_gemma_forward_native_follows_the_ir_priority(layers):
    """On vLLM's own platforms (forward_native): with ``spyre`` first, the Gemma op
    with the raw weight; with ``native``, vLLM's (whose ``1 + w`` shows as an add)."""
    from vllm import ir

    layer = _build(f"{LAYERNORM}.GemmaRMSNorm", torch.bfloat16)
    assert layer._forward_method != layer.forward_oot  # this machine's CPU platform
    x, residual = torch.randn(5, HIDDEN, dtype=torch.bfloat16), torch.randn(5, HIDDEN, dtype=torch.bfloat16)
    spyre_vllm.register()
    with ir.ops.rms_norm.set_priority(["spyre", "native"]), \
            ir.ops.fused_add_rms_norm.set_priority(["spyre", "native"]):
        out = {}
        ran = _top_level(lambda: out.update(p=layer(x), f=layer(x, residual)))
    assert ran == GEMMA_OPS, ran
    with ir.ops.rms_norm.set_priority(["native"]), ir.ops.fused_add_rms_norm.set_priority(["native"]):
        native = {}
        ran = _top_level(lambda: native.update(p=layer(x), f=layer(x, residual)))
    assert "aten::add" in ran and not any(name.startswith("spyre") for name in ran), ran
    tol = _tolerance(torch.bfloat16)
    torch.testing.assert_close(out["p"], native["p"], **tol)
    torch.testing.assert_close(out["f"][1], native["f"][1], **tol)
    torch.testing.assert_close(out["f"][0], native["f"][0], **tol)


def test_rms_norm_forward_native_stays_vllms(layers):
    """The RMSNorm layers' forward_native is vLLM's: its IR op picks the provider."""
    cls = layers[f"{LAYERNORM}.RMSNorm"]
    assert cls.forward_native is _vllm_class(f"{LAYERNORM}.RMSNorm").forward_native


def test_not_enabled_means_vllms_forward(layers, oot_platform):
    layer = _build(f"{LAYERNORM}.GemmaRMSNorm", torch.float32, custom_ops=("none", "-GemmaRMSNorm"))
    assert layer._forward_method != layer.forward_oot


def test_unsupported_arguments_fall_back_to_vllm(layers, oot_platform):
    """A bfloat16 weight with float16 activations (vLLM rounds x to the weight's
    dtype first): the library does not serve it; vLLM's forward_native does."""
    layer = _build(f"{LAYERNORM}.GemmaRMSNorm", torch.bfloat16)
    x = torch.randn(4, HIDDEN, dtype=torch.float16)
    out = {}
    ran = _top_level(lambda: out.update(y=layer(x)))
    assert not any(name.startswith("spyre") for name in ran), ran
    expected = _vllm_reference(_vllm_class(f"{LAYERNORM}.GemmaRMSNorm"), layer, x)
    torch.testing.assert_close(out["y"], expected, rtol=0, atol=0)


def test_variance_size_falls_back_to_native(layers, oot_platform):
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(_config(["all"])):
        layer = _vllm_class(f"{LAYERNORM}.RMSNorm")(256, eps=EPS, var_hidden_size=128)
    x = torch.randn(4, 256)
    torch.testing.assert_close(layer(x), layer.forward_native(x), rtol=0, atol=0)


def test_a_name_taken_by_another_plugin_is_refused():
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot
    from vllm.model_executor.layers.layernorm import GemmaRMSNorm

    class Theirs(GemmaRMSNorm):
        pass

    CustomOp.register_oot(name="GemmaRMSNorm")(Theirs)
    try:
        with pytest.raises(RuntimeError, match="another out-of-tree GemmaRMSNorm"):
            spyre_vllm.register_oot_layers(only=("GemmaRMSNorm",))
        with pytest.raises(RuntimeError, match="unknown layer names"):
            spyre_vllm.register_oot_layers(only=("LayerNorm",))
    finally:
        op_registry_oot.pop("GemmaRMSNorm", None)


HW_AGNOSTIC_RUN = """
import os, types, torch
os.environ["VLLM_TARGET_DEVICE"] = "cpu"
import spyre_ops.vllm as spyre_vllm
import vllm.model_executor.hw_agnostic.custom_op as hw_custom_op
from vllm.config import CompilationConfig, VllmConfig, set_current_vllm_config
from vllm.model_executor.hw_agnostic.layers.layernorm import RMSNorm as HwRMSNorm
from vllm.model_executor.models.transformers.fusers.rms_norm import TPAwareRMSNorm

assert issubclass(TPAwareRMSNorm, HwRMSNorm)  # the backend resolved the hw-agnostic layer
registered = spyre_vllm.register_oot_layers()
cls = registered["vllm.model_executor.models.transformers.fusers.rms_norm.TPAwareRMSNorm"]
assert hw_custom_op.op_registry_oot["TPAwareRMSNorm"] is cls  # the hw-agnostic registry
hw_custom_op.current_platform = types.SimpleNamespace(is_out_of_tree=lambda: True)
with set_current_vllm_config(VllmConfig(compilation_config=CompilationConfig(custom_ops=["all"]))):
    layer = TPAwareRMSNorm(256, eps=1e-6)
assert type(layer) is cls, type(layer)
x = torch.randn(3, 256)
with torch.profiler.profile() as prof:
    out = layer(x)
print("RAN", [e.name for e in prof.events() if e.cpu_parent is None])
torch.testing.assert_close(out, HwRMSNorm.forward_native(layer, x), atol=1e-5, rtol=1.3e-6)
print("OK")
"""


def test_transformers_backend_on_the_hw_agnostic_path():
    """Under VLLM_USE_HW_AGNOSTIC=1 the Transformers backend's TPAwareRMSNorm derives from
    the hw-agnostic RMSNorm and is looked up in that path's registry: registered there,
    vLLM builds the library's class (a fresh interpreter: the backend resolves at import)."""
    import os

    from subprocess_python import run_python

    proc = run_python(HW_AGNOSTIC_RUN, env=dict(os.environ, VLLM_USE_HW_AGNOSTIC="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RAN ['spyre::rms_norm']" in proc.stdout and "OK" in proc.stdout
