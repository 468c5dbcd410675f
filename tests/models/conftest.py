"""Set-up of the real-model tests: the checkpoints `make models` writes, and transformers.

`make test` sets SPYRE_OPS_REQUIRE_REAL_MODEL=1 after installing both: there a
missing checkpoint or package fails the tests. Run by hand without them, the
tests that need them are skipped with the command that provides them.

Each model is loaded once per session; ``real`` parametrizes a test over all of
them (SmolLM2, Gemma 3), ``smollm`` is SmolLM2 alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import real_model  # noqa: E402

REQUIRED = os.environ.get("SPYRE_OPS_REQUIRE_REAL_MODEL") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (SPYRE_OPS_REQUIRE_REAL_MODEL=1)")
    pytest.skip(f"{reason}: run `make models`")


@pytest.fixture(scope="session")
def transformers_installed() -> None:
    if importlib.util.find_spec("transformers") is None:
        _unavailable("transformers is not installed")


def _checkpoint(folder) -> None:
    if not (folder / "config.json").exists():
        _unavailable(f"no real-model checkpoint at {folder}")


@pytest.fixture(scope="session")
def model_dir(transformers_installed):
    _checkpoint(real_model.MODEL_DIR)
    return real_model.MODEL_DIR


@pytest.fixture(scope="session")
def smollm(model_dir):
    """(model, tokenizer): the float32 model on CPU, unpatched (tests must leave it so)."""
    return real_model.load()


@pytest.fixture(scope="session")
def prompts(smollm):
    _, tokenizer = smollm
    return [real_model.chat_ids(tokenizer, q) for q in real_model.QUESTIONS]


@pytest.fixture(scope="session")
def cpu_fp32_answers(smollm, prompts):
    """The unpatched float32 model's greedy answers (token ids), computed once for every test."""
    model, _ = smollm
    with real_model.one_thread():
        return [real_model.greedy(model, ids) for ids in prompts]


@dataclass
class Loaded:
    """A real model loaded for the tests (float32, CPU, unpatched: tests must leave it so)."""

    spec: real_model.RealModel
    model: Any
    tokenizer: Any
    prompts: list  #: token ids (1 x n) of spec.prompts
    answers: list  #: the unpatched model's greedy answers (token ids) to them


@pytest.fixture(scope="session")
def smollm2(smollm, prompts, cpu_fp32_answers) -> Loaded:
    model, tokenizer = smollm
    return Loaded(real_model.SMOLLM2, model, tokenizer, prompts, cpu_fp32_answers)


@pytest.fixture(scope="session")
def gemma3_dir(transformers_installed):
    """Gemma 3's checkpoint folder, for the tests that do not load it here (vLLM's)."""
    _checkpoint(real_model.GEMMA3.dir)
    return real_model.GEMMA3.dir


@pytest.fixture(scope="session")
def gemma3(transformers_installed) -> Loaded:
    spec = real_model.GEMMA3
    _checkpoint(spec.dir)
    model, tokenizer = spec.load()
    prompts = [spec.prompt_ids(tokenizer, p) for p in spec.prompts]
    with real_model.one_thread():
        answers = [real_model.greedy(model, ids, spec.new_tokens) for ids in prompts]
    return Loaded(spec, model, tokenizer, prompts, answers)


@pytest.fixture(scope="session", params=list(real_model.MODELS))
def real(request) -> Loaded:
    """Each real model in turn (the fixture of its short name in real_model.MODELS)."""
    return request.getfixturevalue(request.param)


#: Scripts started as soon as collection ends, by the name of the fixture that waits for each:
#: (script in this folder, its arguments). The emulated spyre device run is minutes of one
#: core in a process of its own; started early, it overlaps the in-process tests before it.
EARLY_RUNS = {"spyre_run": ("spyre_device_run.py", ())}
_early: dict = {}


def pytest_collection_finish(session) -> None:
    from subprocess_python import Background, needed_by_session

    if not (real_model.MODEL_DIR / "config.json").exists():
        return  # model_dir fails or skips the tests that need it
    for name in needed_by_session(session, EARLY_RUNS):
        script, args = EARLY_RUNS[name]
        folder = session.config._tmp_path_factory.mktemp(name)
        _early[name] = Background(
            [sys.executable, os.path.join(os.path.dirname(__file__), script), "--out", str(folder / "result.json"), *args],
            folder,
        )


def pytest_sessionfinish(session) -> None:
    for run in _early.values():
        run.stop()


@pytest.fixture(scope="session")
def started_early():
    """{fixture name: Background run} of the scripts started when collection ended."""
    return _early
