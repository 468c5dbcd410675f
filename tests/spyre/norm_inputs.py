"""Every RMSNorm input of SmolLM2-135M and Gemma 3 270M, captured from CPU fp32
runs (forward pre-hooks on the norm modules, a few prompts), for the SEN169
accuracy tests. Captured once per checkout into .cache/norm_inputs/ (loading
and running the models takes longer than the tests themselves).
"""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / ".cache" / "models"
CACHE = ROOT / ".cache" / "norm_inputs"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at a temperature of"]
#: Gemma 3 answers garbage without its BOS token (id 2) first.
BOS = {"gemma-3-270m": 2}


def captured(model: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{norm class/size: (rows fp32 [n, hidden], effective weight fp32, eps)} of model's norms."""
    path = CACHE / f"{model}.pt"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(_capture(model), path)
    return torch.load(path)


def _capture(model: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODELS / model)
    lm = AutoModelForCausalLM.from_pretrained(MODELS / model, dtype=torch.float32).eval()
    rows: dict[str, list[torch.Tensor]] = {}
    weights: dict[str, tuple[torch.Tensor, float]] = {}

    def hook(name: str, module: torch.nn.Module):
        gemma = type(module).__name__.startswith("Gemma")
        weight = (1 + module.weight.detach()) if gemma else module.weight.detach()
        eps = float(getattr(module, "eps", getattr(module, "variance_epsilon", 1e-6)))

        def pre(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            key = f"{type(module).__name__}[{x.shape[-1]}]:{name.rsplit('.', 1)[-1]}"
            rows.setdefault(key, []).append(x.clone())
            weights.setdefault(key, (weight.float().clone(), eps))

        return pre

    for name, module in lm.named_modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.register_forward_pre_hook(hook(name, module))
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            if model in BOS:
                ids = torch.cat([torch.tensor([[BOS[model]]]), ids], dim=1)
            lm(ids)
    return {k: (torch.cat(v), *weights[k]) for k, v in rows.items()}
