"""Set-up of the real-model tests: the checkpoint `make models` writes, and transformers.

`make test` sets SPYRE_OPS_REQUIRE_REAL_MODEL=1 after installing both: there a
missing checkpoint or package fails the tests. Run by hand without them, the
tests that need them are skipped with the command that provides them.
"""

from __future__ import annotations

import importlib.util
import os
import sys

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


@pytest.fixture(scope="session")
def model_dir(transformers_installed):
    if not (real_model.MODEL_DIR / "config.json").exists():
        _unavailable(f"no real-model checkpoint at {real_model.MODEL_DIR}")
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
    return [real_model.greedy(model, ids) for ids in prompts]
