"""The real model in float16 on the emulated spyre device with every RMSNorm patched
(spyre_device_run.py, in a process of its own): the same greedy answers as the
float32 CPU model, and no norm call moves data between host and device or runs an
op torch-spyre would run off the device.
"""

import json

import pytest
import torch

import real_model

#: |logprob(fp16 on spyre) - logprob(fp32 on CPU)| at the first answer token, over the
#: whole vocabulary, bounded for the tokens that matter (logprob > -10). The whole model
#: runs in float16 (about 3 decimal digits: relative rounding 2**-11 per op), so the
#: logits move by a few hundredths through 30 layers; 0.25 bounds that with margin while
#: a wrong norm (missing weight, wrong eps scale) moves them by whole units.
LOGPROB_ATOL = 0.25


@pytest.fixture(scope="module")
def spyre_run(model_dir, started_early):
    """The script's result; conftest.py started it when collection ended (EARLY_RUNS)."""
    run = started_early["spyre_run"]
    run.wait(timeout=1500)
    return json.loads((run.output_file.parent / "result.json").read_text())


@pytest.fixture(scope="module")
def cpu_run(smollm, prompts, cpu_fp32_answers):
    model, _ = smollm
    with torch.no_grad():
        logprobs = [model(ids, use_cache=False).logits[0, -1].log_softmax(-1) for ids in prompts]
    return logprobs, cpu_fp32_answers


def test_model_ran_on_the_device_in_fp16(spyre_run):
    assert spyre_run["devices"] == ["spyre:0"]
    assert spyre_run["dtypes"] == ["torch.float16"]
    assert spyre_run["patched"] == real_model.NUM_NORMS


def test_greedy_answers_match_cpu_fp32(spyre_run, cpu_run):
    assert spyre_run["tokens"] == cpu_run[1]


def test_first_token_logprobs_close_to_cpu_fp32(spyre_run, cpu_run):
    for got, ref in zip(spyre_run["logprobs"], cpu_run[0], strict=True):
        got = torch.tensor(got)
        relevant = ref > -10
        assert relevant.sum() >= 1
        assert (got - ref)[relevant].abs().max().item() <= LOGPROB_ATOL
        assert got.argmax() == ref.argmax()


def test_norm_calls_stay_on_the_device(spyre_run):
    # one forward per generated token, and every patched norm ran in each of them
    assert spyre_run["forwards"] == [len(t) for t in spyre_run["tokens"]]
    assert spyre_run["norm_calls"] == real_model.NUM_NORMS * sum(spyre_run["forwards"]) > 0
    assert spyre_run["norm_h2d"] == 0
    assert spyre_run["norm_d2h"] == 0
    assert spyre_run["norm_fallbacks"] == {}
    # each patched norm call was one library op (the prompt's forward, profiled)
    assert spyre_run["op_calls_per_forward"] == [real_model.NUM_NORMS] * len(real_model.QUESTIONS)
