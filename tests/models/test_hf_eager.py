"""The real model (SmolLM2-135M-Instruct, float32, CPU) through transformers, eager:
every RMSNorm routed to torch.ops.spyre.rms_norm gives the unpatched logits to
float32 accuracy and the same greedy answers, and undoing the patch restores
transformers' forward bit for bit.
"""

import pytest
import torch

import real_model
import spyre_ops.transformers as spyre_tf

#: |logit(patched) - logit(unpatched)|. The library op and transformers' formula
#: (pow/mean/rsqrt in float32) differ by summation order only, about 1e-7 relative
#: per norm; through 30 layers that grows to the 7e-5 measured here on logits of
#: magnitude up to ~40 (float32 resolution there is 4e-6). 1e-3 leaves 15x margin and is
#: still far below the ~0.1 gaps between competing logits that decide a greedy token.
LOGIT_ATOL = 1e-3
#: The same bound for log-probabilities (log_softmax shifts all logits by one constant).
LOGPROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def unpatched(smollm, prompts, cpu_fp32_answers):
    model, _ = smollm
    with torch.no_grad():
        logits = [model(ids, use_cache=False).logits for ids in prompts]
    return logits, cpu_fp32_answers


@pytest.fixture(scope="module")
def patched(smollm, prompts, unpatched):
    model, _ = smollm
    with spyre_tf.patch(model) as report:
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            logits = [model(ids, use_cache=False).logits for ids in prompts]
        op_calls = sum(1 for e in prof.events() if e.name == "spyre::rms_norm")
        tokens = [real_model.greedy(model, ids) for ids in prompts]
    return report, logits, tokens, op_calls


def test_patch_reports_every_rms_norm(smollm, patched):
    model, _ = smollm
    report = patched[0]
    norms = {n for n, m in model.named_modules() if type(m).__name__ == "LlamaRMSNorm"}
    assert len(norms) == real_model.NUM_NORMS
    assert set(report.modules) == norms
    assert report.classes == {"LlamaRMSNorm": real_model.NUM_NORMS}
    assert "patched 61 RMSNorm modules: 61 x LlamaRMSNorm (llama)" in str(report)


def test_every_norm_ran_the_library_op(prompts, patched):
    assert patched[3] == real_model.NUM_NORMS * len(prompts)


def test_logits_and_logprobs_match_unpatched(unpatched, patched):
    for got, ref in zip(patched[1], unpatched[0], strict=True):
        assert (got - ref).abs().max().item() <= LOGIT_ATOL
        diff = (got.log_softmax(-1) - ref.log_softmax(-1)).abs().max().item()
        assert diff <= LOGPROB_ATOL


def test_greedy_answers_match_unpatched(smollm, unpatched, patched):
    _, tokenizer = smollm
    assert patched[2] == unpatched[1]
    assert all(len(t) > 0 for t in patched[2])
    # a trained model, not random weights: it knows the answer
    assert "Paris" in tokenizer.decode(patched[2][0])


def test_undo_restores_transformers_forward_bitwise(smollm, prompts, unpatched, patched):
    model, _ = smollm
    assert not any(spyre_tf.is_patched(m) for m in model.modules())
    assert all(type(m).__module__.startswith("transformers.") for m in model.modules()
               if type(m).__name__.endswith("RMSNorm"))
    with torch.no_grad():
        again = model(prompts[0], use_cache=False).logits
    assert torch.equal(again, unpatched[0][0])
