"""A real vLLM engine (CPU, tiny seeded Llama) with IR priority ``spyre,native``:
generation works, the library op ran for every RMSNorm call, and the
log-probabilities match the same engine with ``native``.

The engine runs in a subprocess (vllm_engine_run.py), which writes what it saw
as JSON; the assertions are here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("vllm_engine_run.py")

#: Largest allowed |logprob(spyre) - logprob(native)| per prompt position. The
#: model is bfloat16: a one-ulp (2**-8 relative) difference in a norm output moves
#: the logits by about that relative amount; the logprobs are around -7
#: (vocab 1024), so a few hundredths is the expected spread and 0.2 (3%) the bound.
LOGPROB_ATOL = 0.2
#: ... and their mean, which a systematic error would move.
LOGPROB_MEAN_ATOL = 0.05


@pytest.fixture(scope="module")
def engine_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "result.json"
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


def test_registered_by_the_entry_point(engine_result):
    assert engine_result["registered_by_entry_point"] is True


def test_spyre_run_selected_spyre(engine_result):
    priority = engine_result["runs"]["spyre"]["priority"]
    assert priority == {"rms_norm": ["spyre", "native"],
                        "fused_add_rms_norm": ["spyre", "native"]}


def test_library_op_ran_for_every_rms_norm(engine_result):
    run = engine_result["runs"]["spyre"]
    calls, counts = run["layer_calls"], run["counts"]
    layers = engine_result["num_layers"]
    # a Llama forward: one plain norm (first layer's input), then 2 * layers fused ones
    assert engine_result["num_rms_norm_layers"] == 2 * layers + 1
    assert calls["plain"] > 0 and calls["fused"] == 2 * layers * calls["plain"]
    assert counts["spyre::rms_norm"] == calls["plain"]
    assert counts["spyre::fused_add_rms_norm_"] == calls["fused"]


def test_native_run_did_not_use_the_library(engine_result):
    run = engine_result["runs"]["native"]
    assert run["priority"] == {"rms_norm": ["native"], "fused_add_rms_norm": ["native"]}
    assert run["layer_calls"]["plain"] > 0
    assert all(v == 0 for k, v in run["counts"].items() if k.startswith("spyre::")), run["counts"]


def test_generation_and_logprobs_match_native(engine_result):
    spyre = engine_result["runs"]["spyre"]["outputs"]
    native = engine_result["runs"]["native"]["outputs"]
    assert len(spyre) == len(native) == 3
    diffs = []
    for s, n in zip(spyre, native):
        assert len(s["tokens"]) == len(n["tokens"]) == 8
        assert len(s["prompt_logprobs"]) == len(n["prompt_logprobs"]) > 1
        for a, b in zip(s["prompt_logprobs"], n["prompt_logprobs"]):
            assert (a is None) == (b is None)
            if a is not None:
                diffs.append(abs(a - b))
    assert len(diffs) >= 100
    assert max(diffs) <= LOGPROB_ATOL, max(diffs)
    assert sum(diffs) / len(diffs) <= LOGPROB_MEAN_ATOL, sum(diffs) / len(diffs)
