"""A real vLLM engine (CPU, tiny seeded Llama) with IR priority ``spyre,native``:
generation works, the library op ran for every RMSNorm call, and the
log-probabilities match the same engine with ``native``; then the same with
vLLM's torch.compile (as set up by its CPU platform) instead of eager mode.

The engines run in subprocesses (vllm_engine_run.py; both modes at once), which write what they saw
as JSON; the assertions are here.
"""

import json
import os
import sys
from pathlib import Path

import pytest
from subprocess_python import Background, needed_by

SCRIPT = Path(__file__).with_name("vllm_engine_run.py")

#: Largest allowed |logprob(spyre) - logprob(native)| per prompt position. The
#: model is bfloat16: a one-ulp (2**-8 relative) difference in a norm output moves
#: the logits by about that relative amount; the logprobs are around -7
#: (vocab 1024), so a few hundredths is the expected spread and 0.2 (3%) the bound.
LOGPROB_ATOL = 0.2
#: ... and their mean, which a systematic error would move.
LOGPROB_MEAN_ATOL = 0.05


MODES = {"engine_result": "eager", "compiled_result": "compiled"}


@pytest.fixture(scope="module")
def engines(request, tmp_path_factory):
    """Starts the engine run of each mode a selected test needs, both at once (most of
    each is starting a process and importing torch and vLLM: one core each)."""
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    started = {}
    try:
        for name in needed_by(request, MODES):
            folder = tmp_path_factory.mktemp(f"engine-{MODES[name]}")
            started[name] = Background(
                [sys.executable, str(SCRIPT), "--out", str(folder / "result.json"), "--mode", MODES[name]],
                folder, env,
            )
        yield started
    finally:
        for run in started.values():
            run.stop()


def _result(engines: dict, name: str) -> dict:
    run = engines[name]
    run.wait()
    return json.loads((run.output_file.parent / "result.json").read_text())


@pytest.fixture(scope="module")
def engine_result(engines):
    return _result(engines, "engine_result")


@pytest.fixture(scope="module")
def compiled_result(engines):
    return _result(engines, "compiled_result")


def _logprob_diffs(a: list[dict], b: list[dict]) -> list[float]:
    diffs = []
    for s, n in zip(a, b, strict=True):
        assert len(s["tokens"]) == len(n["tokens"]) == 8
        assert len(s["prompt_logprobs"]) == len(n["prompt_logprobs"]) > 1
        for x, y in zip(s["prompt_logprobs"], n["prompt_logprobs"]):
            assert (x is None) == (y is None)
            if x is not None:
                diffs.append(abs(x - y))
    return diffs


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
    diffs = _logprob_diffs(spyre, native)
    assert len(diffs) >= 100
    assert max(diffs) <= LOGPROB_ATOL, max(diffs)
    assert sum(diffs) / len(diffs) <= LOGPROB_MEAN_ATOL, sum(diffs) / len(diffs)


def test_compiled_engine_ran_the_library_op_for_every_rms_norm(compiled_result, engine_result):
    """Under vLLM's compile the layer hooks don't run; the same prompts and steps
    make as many norm calls as in eager mode, and every one is a library op."""
    run = compiled_result["runs"]["spyre"]
    assert run["priority"] == engine_result["runs"]["spyre"]["priority"]
    eager_calls = engine_result["runs"]["spyre"]["layer_calls"]
    assert run["counts"]["spyre::rms_norm"] == eager_calls["plain"] > 0
    assert run["counts"]["spyre::fused_add_rms_norm_"] == eager_calls["fused"]


def test_compiled_engine_logprobs_match_native(compiled_result, engine_result):
    diffs = _logprob_diffs(compiled_result["runs"]["spyre"]["outputs"],
                           engine_result["runs"]["native"]["outputs"])
    assert max(diffs) <= LOGPROB_ATOL, max(diffs)
    assert sum(diffs) / len(diffs) <= LOGPROB_MEAN_ATOL, sum(diffs) / len(diffs)
