"""Shared set-up of the tests on the emulated spyre device.

Enabling the emulator renames PyTorch's PrivateUse1 backend for the rest of the
process, so these tests need a pytest process of their own: ``make test`` runs
``pytest tests --ignore=tests/spyre`` and then ``pytest tests/spyre``. A session
that collects both is refused (before anything is enabled) rather than letting
the rename leak into the other tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spyre_ops
import spyre_ops.emulator as emulator

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    outside = [item.nodeid for item in items if HERE not in Path(str(item.path)).resolve().parents]
    if outside:
        raise pytest.UsageError(
            "tests/spyre enables the emulated spyre device, which renames PyTorch's PrivateUse1 "
            "backend for the whole process: run it in its own pytest process, as `make test` does "
            f"(`pytest tests --ignore=tests/spyre` then `pytest tests/spyre`); also collected: {outside[0]} ..."
        )


@pytest.fixture(scope="session", autouse=True)
def spyre_device() -> torch.device:
    """The emulated spyre device, enabled once for the session."""
    emulator.enable()
    return torch.device("spyre")


@pytest.fixture(autouse=True)
def default_compute_dtype():
    """Every test starts with the default (fp16) compute policy and leaves it so."""
    spyre_ops.spyre.set_compute_dtype(torch.float16)
    yield
    spyre_ops.spyre.set_compute_dtype(torch.float16)
