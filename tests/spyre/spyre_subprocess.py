"""Running Python code in a fresh process, for what must not happen in the test process
(tests/subprocess_python.py, with a shorter timeout)."""

from __future__ import annotations

import subprocess

from subprocess_python import ROOT
from subprocess_python import run_python as _run_python

__all__ = ["ROOT", "run_python"]


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``code`` (dedented) in a new interpreter that imports spyre_ops from this checkout
    (``env``: the environment, os.environ by default; this checkout goes first on PYTHONPATH)."""
    return _run_python(code, env=env, timeout=300)
