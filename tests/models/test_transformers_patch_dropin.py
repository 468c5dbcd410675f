"""spyre_ops.transformers.patch keeps what the patched class does (issue 17): eps is read
on every call, torch.nn.RMSNorm's eps=None means torch's eps, the output dtype under
mixed dtypes (float32 norm weights, bfloat16 activations, as autocast leaves them) is
the class's own, and a patched model pickles and torch.saves whole. Each checked
eagerly and, where it can differ, under torch.compile; against the unpatched class and
a float64 reference (tests/reference.py).
"""

import io
import pickle
import subprocess
import sys

import pytest
import torch
from reference import assert_close_to_ref, rms_norm_ref
from torch import nn

import spyre_ops.transformers as spyre_tf

#: Rows whose mean square (~1e-8) is far below the eps values used: eps decides the result.
SMALL = 1e-4


def _small_input(dtype=torch.float32, rows: int = 4, n: int = 16) -> torch.Tensor:
    return (torch.randn(rows, n, generator=torch.Generator().manual_seed(0)) * SMALL).to(dtype)


def _llama_norm(n: int = 16, dtype=torch.float32):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(n, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    return norm


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_eps_set_after_patch_is_read(transformers_installed, compiled):
    llama, torch_norm = _llama_norm(), nn.RMSNorm(16, eps=1e-6)
    x = _small_input()
    for norm, attr in ((llama, "variance_epsilon"), (torch_norm, "eps")):
        with spyre_tf.patch(norm):
            run = torch.compile(norm, fullgraph=True, backend="aot_eager") if compiled else norm
            run(x)
            setattr(norm, attr, 1e-2)  # as a user or a config change would, after patching
            got = run(x)
        assert_close_to_ref(got, rms_norm_ref(x, [16], norm.weight, 1e-2))
        torch.testing.assert_close(got, norm(x))  # the unpatched class with the new eps
        torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_torch_rms_norm_eps_none_is_torchs(dtype):
    """torch.nn.RMSNorm(eps=None) uses the machine epsilon of the computation dtype
    (float32's for 16-bit and float32 inputs, float64's for float64), whatever the weight's
    dtype: so does the patched module (it used finfo(weight dtype).eps: 0.0078 in bfloat16)."""
    norm = nn.RMSNorm(16, eps=None, dtype=dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = _small_input(dtype)
    ref = norm(x)
    with spyre_tf.patch(norm):
        got = norm(x)
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    assert_close_to_ref(got, rms_norm_ref(x, [16], norm.weight, eps))
    assert_close_to_ref(ref, rms_norm_ref(x, [16], norm.weight, eps))  # torch's own meaning


def _class(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), name)


@pytest.mark.parametrize(("module", "name", "out_dtype"), [
    ("llama", "LlamaRMSNorm", torch.float32),  # weight * x̂.to(input_dtype): promoted
    ("qwen3", "Qwen3RMSNorm", torch.float32),
    ("olmo2", "Olmo2RMSNorm", torch.bfloat16),  # (weight * x̂).to(input_dtype)
    ("gemma3", "Gemma3RMSNorm", torch.bfloat16),  # ... .type_as(x)
    ("torch", "RMSNorm", torch.bfloat16),  # torch.nn.RMSNorm: the input's dtype
])
def test_mixed_dtypes_keep_the_class_output_dtype(transformers_installed, module, name, out_dtype):
    """float32 norm weights and bfloat16 activations (what autocast leaves a model with):
    the patched module returns the dtype its class returns, computed in float32 and
    rounded once to it (the class may round x̂ to bfloat16 first: one bfloat16 rounding
    apart at most)."""
    cls = nn.RMSNorm if module == "torch" else _class(module, name)
    norm = cls(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1)).bfloat16()
    ref = norm(x)
    with spyre_tf.patch(norm):
        got = norm(x)
        compiled = torch.compile(norm, fullgraph=True, backend="aot_eager")(x)
    torch._dynamo.reset()
    assert ref.dtype == out_dtype and got.dtype == out_dtype and compiled.dtype == out_dtype
    assert torch.equal(compiled, got)
    weight = 1.0 + norm.weight if module == "gemma3" else norm.weight
    assert_close_to_ref(got, rms_norm_ref(x, [64], weight, 1e-6))
    torch.testing.assert_close(got, ref, atol=2**-7, rtol=2**-7)


def test_tiny_llama_under_autocast_matches_unpatched(transformers_installed):
    """A float32 Llama run under torch.autocast(bfloat16): logits of the same dtype and the
    same argmax as unpatched; both within bfloat16 accuracy of the float32 model."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fp32 = model(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = model(ids).logits
            with spyre_tf.patch(model):
                got = model(ids).logits
    assert got.dtype == ref.dtype
    bound = 4 * (ref.float() - fp32).abs().max().item() + 1e-3
    assert (got.float() - fp32).abs().max().item() <= bound


def _patched_model():
    model = nn.Sequential(nn.Linear(16, 16), nn.RMSNorm(16, eps=1e-5), nn.RMSNorm(16))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    spyre_tf.patch(model)
    return model


def test_patched_model_pickles_and_torch_saves_whole(tmp_path):
    model = _patched_model()
    x = torch.randn(3, 16)
    expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for loaded in (pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)):
        assert [spyre_tf.is_patched(m) for m in loaded] == [False, True, True]
        assert torch.equal(loaded(x), expected)
        assert spyre_tf.unpatch(loaded) == 2 and type(loaded[1]) is nn.RMSNorm
        assert torch.equal(loaded[1].weight, model[1].weight)

    # a fresh interpreter, where no patched class exists until the load makes it
    path = tmp_path / "model.pt"
    torch.save({"model": model, "x": x, "expected": expected}, path)
    code = ("import sys, torch, spyre_ops.transformers as t\n"
            f"d = torch.load({str(path)!r}, weights_only=False)\n"
            "m = d['model']; print([t.is_patched(n) for n in m], torch.equal(m(d['x']), d['expected']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[False,", "True,", "True]", "True"]


def test_patched_transformers_model_round_trips(transformers_installed):
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    report = spyre_tf.patch(model)
    ids = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(3))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert {n for n, _ in spyre_tf.patched_modules(loaded)} == set(report.modules)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
