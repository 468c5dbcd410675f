"""spyre_ops.transformers.patch on small random-weight models of each norm family,
and its refusals: Gemma (``(1 + weight)`` in float32), Qwen3 (per-head q/k norms),
torch.nn.RMSNorm, an unknown RMSNorm class, a class whose arithmetic is not its
declared family's, a second patch; and that the module imports without transformers.
"""

import subprocess
import sys

import pytest
import torch
from torch import nn

import spyre_ops.transformers as spyre_tf

#: float32, two layers: only the summation order differs from transformers' formula.
ATOL = 1e-4
#: The library op each family's patched forward calls.
FAMILY_OPS = {"llama": "spyre::rms_norm", "gemma": "spyre_ops::gemma_rms_norm"}


def _tiny(config_cls, **extra):
    config = config_cls(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, **extra)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # away from the initial 0 (Gemma) / 1 (Llama): the weight must matter
                p.copy_(0.5 * torch.randn_like(p))
    return model


def _compare(model, expected_norms: int, family: str) -> None:
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        with spyre_tf.patch(model) as report:
            assert len(report) == expected_norms
            assert all(m.endswith(f"({family})") for m in report.modules.values())
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                got = model(ids).logits
        again = model(ids).logits
    assert sum(e.name == FAMILY_OPS[family] for e in prof.events()) == expected_norms
    assert (got - ref).abs().max().item() <= ATOL
    assert torch.equal(again, ref)  # undone


def test_gemma_family(transformers_installed):
    from transformers import GemmaConfig

    _compare(_tiny(GemmaConfig), expected_norms=2 * 2 + 1, family="gemma")


def test_gemma_family_in_bfloat16_rounds_once(transformers_installed):
    """Gemma computes in float32 and rounds once: so does the patched forward, exactly."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    norm = GemmaRMSNorm(256, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(256))
    x = torch.randn(7, 256, dtype=torch.bfloat16)
    ref = norm(x)
    with spyre_tf.patch(norm):
        got = norm(x)
    assert got.dtype == ref.dtype == torch.bfloat16
    # one bf16 rounding of nearly the same float32 value: at most one ulp apart
    assert ((got.float() - ref.float()).abs() <= ref.float().abs() * 2**-7 + 1e-6).all()


def test_qwen3_per_head_qk_norms(transformers_installed):
    from transformers import Qwen3Config

    # per layer: input, post-attention, q_norm, k_norm; plus the final norm
    _compare(_tiny(Qwen3Config), expected_norms=2 * 4 + 1, family="llama")


def test_torch_rms_norm():
    model = nn.Sequential(nn.Linear(32, 32), nn.RMSNorm(32, eps=1e-6))
    with torch.no_grad():
        model[1].weight.copy_(torch.rand(32) + 0.5)
    x = torch.randn(5, 32)
    ref = model(x)
    with spyre_tf.patch(model) as report:
        assert report.classes == {"RMSNorm": 1}
        got = model(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


class MyRMSNorm(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def test_unknown_rms_norm_class_is_refused():
    model = nn.Sequential(nn.RMSNorm(16), MyRMSNorm(16))
    with pytest.raises(ValueError, match=r"unknown RMSNorm classes: .*MyRMSNorm \(1 modules\).*register_norm_class"):
        spyre_tf.patch(model)
    assert not any(spyre_tf.is_patched(m) for m in model.modules())  # nothing patched


def test_declared_class_is_patched_and_a_wrong_family_refused(monkeypatch):
    monkeypatch.setitem(spyre_tf.NORM_CLASSES, "MyRMSNorm", "gemma")
    model = nn.Sequential(MyRMSNorm(16))
    with pytest.raises(ValueError, match="does not compute the 'gemma' family's formula"):
        spyre_tf.patch(model)
    assert not spyre_tf.is_patched(model[0])
    spyre_tf.register_norm_class(MyRMSNorm, "llama")
    x = torch.randn(3, 16)
    ref = model(x)
    with spyre_tf.patch(model):
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="family must be one of"):
        spyre_tf.register_norm_class(MyRMSNorm, "layernorm")


def test_second_patch_is_refused_and_unpatch_counts():
    model = nn.Sequential(nn.RMSNorm(16, eps=1e-5), nn.RMSNorm(16))
    spyre_tf.patch(model)
    with pytest.raises(RuntimeError, match="already patched"):
        spyre_tf.patch(model)
    assert spyre_tf.unpatch(model) == 2
    assert spyre_tf.unpatch(model) == 0
    assert type(model[0]) is nn.RMSNorm
    assert not [k for k in model[0].__dict__ if k.startswith("_spyre_ops")]
    assert type(model[0].eps) is float and model[0].eps == 1e-5  # as it was


def test_instance_level_forward_is_refused():
    """A forward set on the instance (as accelerate's hooks and kernelize do) would
    silently bypass the patched class: refused instead."""
    model = nn.Sequential(nn.RMSNorm(16), nn.RMSNorm(16))
    model[1].forward = model[1].forward  # an instance attribute, as those tools set
    with pytest.raises(ValueError, match=r"'1'\) have a forward set on the instance"):
        spyre_tf.patch(model)
    assert not spyre_tf.is_patched(model[0])


def test_imports_without_transformers():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import spyre_ops, spyre_ops.transformers as t, torch\n"
            "m = torch.nn.RMSNorm(8); r = t.patch(m); print(len(r), type(m).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "RMSNorm"]
