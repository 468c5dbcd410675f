"""Gemma 3 270M in float16 on the emulated spyre device, every Gemma3RMSNorm patched.

The device holds float16 as SEN169 (largest finite ~8.57e9), so the model's residual
stream (|h| up to 1.04e5, beyond IEEE fp16's 65504) lives there; every op rounds its
result to SEN169 (9 mantissa bits). What is asserted: the greedy continuation of a
prompt equals the float32 CPU model's token for token, the first token of every prompt
too, and the patched norms move nothing between host and device and run no op
torch-spyre would run off the device.

Kept small for `make test` (each emulated op decodes, computes in fp32 and re-encodes
on the host: a forward takes seconds): one prompt generated, the others judged on their
first token; examples/real_model.py (``make demo``) shows the longer answers.
"""

from __future__ import annotations

import pytest
import torch
from models.real_model import GEMMA3, norm_transfers

import spyre_ops.transformers as spyre_tf

NEW_TOKENS = 4


@pytest.fixture(scope="module")
def models(spyre_device):
    if not (GEMMA3.dir / "config.json").exists():
        pytest.fail(f"{GEMMA3.dir} is missing: run `make models` (the tests need the real models)")
    cpu, tokenizer = GEMMA3.load(dtype=torch.float32)
    dev, _ = GEMMA3.load(dtype=torch.float16, device="spyre")
    report = spyre_tf.patch(dev)
    return cpu, dev, tokenizer, report


def greedy(model, ids: torch.Tensor, new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             do_sample=False)
    return out[0, ids.shape[1]:].cpu().tolist()


def test_every_norm_is_patched_and_the_model_is_on_the_device(models):
    _, dev, _, report = models
    assert len(report) == GEMMA3.num_norms
    assert {str(p.device) for p in dev.parameters()} == {"spyre:0"}
    assert {p.dtype for p in dev.parameters()} == {torch.float16}


def test_greedy_answer_matches_cpu_fp32_with_no_copies_in_the_norms(models):
    cpu, dev, tokenizer, _ = models
    ids = GEMMA3.prompt_ids(tokenizer, GEMMA3.prompts[0])
    want = greedy(cpu, ids, NEW_TOKENS)

    with norm_transfers(dev) as inside:
        got = greedy(dev, ids.to("spyre"), NEW_TOKENS)
    same = sum(a == b for a, b in zip(got, want))
    print(f"\nGemma 3 270M fp16 on the emulated device: {same} of {len(want)} tokens as cpu fp32: "
          f"{tokenizer.decode(got)!r} vs {tokenizer.decode(want)!r}")
    assert got == want
    assert inside["calls"] == GEMMA3.num_norms * NEW_TOKENS  # one forward per generated token
    assert (inside["h2d"], inside["d2h"]) == (0, 0)
    assert not inside["fallbacks"]


def test_first_token_of_every_prompt_matches_cpu_fp32(models):
    cpu, dev, tokenizer, _ = models
    for prompt in GEMMA3.prompts[1:]:
        ids = GEMMA3.prompt_ids(tokenizer, prompt)
        with torch.no_grad():
            want = cpu(ids).logits[0, -1]
            got = dev(ids.to("spyre")).logits[0, -1].float().cpu()
        assert torch.isfinite(got).all(), prompt
        assert int(got.argmax()) == int(want.argmax()), prompt
