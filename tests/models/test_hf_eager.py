"""Each real model (SmolLM2-135M-Instruct, Gemma 3 270M; float32, CPU) through
transformers, eager: every RMSNorm routed to its library op gives the unpatched
logits to float32 accuracy and the same greedy answers, and undoing the patch
restores transformers' forward bit for bit.
"""

import pytest
import torch

import real_model
import spyre_ops.transformers as spyre_tf

#: |logit(patched) - logit(unpatched)|. The library op and transformers' formula
#: (pow/mean/rsqrt in float32) differ by summation order only, about 1e-7 relative
#: per norm; through the layers that grows to the ~7e-5 (SmolLM2, 30 layers, logits up
#: to ~40, float32 resolution there 4e-6) and ~2e-5 (Gemma 3, 18 layers) measured here.
#: 1e-3 leaves 15x margin and is still far below the ~0.1 gaps between competing logits
#: that decide a greedy token.
LOGIT_ATOL = 1e-3
#: The same bound for log-probabilities (log_softmax shifts all logits by one constant).
LOGPROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def unpatched(real):
    with torch.no_grad(), real_model.one_thread():
        return [real.model(ids, use_cache=False).logits for ids in real.prompts]


@pytest.fixture(scope="module")
def patched(real, unpatched):
    with spyre_tf.patch(real.model) as report, real_model.one_thread():
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            logits = [real.model(ids, use_cache=False).logits for ids in real.prompts]
        op_calls = sum(1 for e in prof.events() if e.name == real.spec.op)
        tokens = [real_model.greedy(real.model, ids, real.spec.new_tokens) for ids in real.prompts]
    return report, logits, tokens, op_calls


def test_patch_reports_every_rms_norm(real, patched):
    spec = real.spec
    report = patched[0]
    norms = {n for n, m in real.model.named_modules() if type(m).__name__ == spec.norm_class}
    assert len(norms) == spec.num_norms
    assert set(report.modules) == norms
    assert report.classes == {spec.norm_class: spec.num_norms}
    assert f"patched {spec.num_norms} RMSNorm modules: {spec.num_norms} x {spec.norm_class} ({spec.family})" \
        in str(report)


def test_every_norm_ran_the_library_op(real, patched):
    assert patched[3] == real.spec.num_norms * len(real.prompts)


def test_logits_and_logprobs_match_unpatched(unpatched, patched):
    for got, ref in zip(patched[1], unpatched, strict=True):
        assert (got - ref).abs().max().item() <= LOGIT_ATOL
        diff = (got.log_softmax(-1) - ref.log_softmax(-1)).abs().max().item()
        assert diff <= LOGPROB_ATOL


def test_greedy_answers_match_unpatched(real, patched):
    assert patched[2] == real.answers
    assert all(len(t) > 0 for t in patched[2])
    # a trained model, not random weights: it knows the answer
    assert real.spec.answer in real.tokenizer.decode(patched[2][0])


def test_undo_restores_transformers_forward_bitwise(real, unpatched, patched):
    assert not any(spyre_tf.is_patched(m) for m in real.model.modules())
    assert all(type(m).__module__.startswith("transformers.") for m in real.model.modules()
               if type(m).__name__.endswith("RMSNorm"))
    with torch.no_grad(), real_model.one_thread():
        again = real.model(real.prompts[0], use_cache=False).logits
    assert torch.equal(again, unpatched[0])
