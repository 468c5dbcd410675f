"""Running Python code in a fresh interpreter that imports spyre_ops from this checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Runs ``code`` (dedented) with ``args`` in sys.argv[1:]; captures its output, never raises on failure."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT,
    )


class Background:
    """A script run in the background, its output in a file, so that several runs overlap.

    Usage: ``run = Background([sys.executable, script, ...], folder, env)``, later
    ``run.wait()`` (its output; asserts a zero exit status); ``run.stop()`` kills it,
    with every process it started, if it is still running.
    """

    def __init__(self, argv: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.output_file = folder / "output.txt"
        with open(self.output_file, "w") as output:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, with the processes it starts
            )

    def wait(self, timeout: float = 1200) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        output = self.output_file.read_text()
        assert self.proc.returncode == 0, output[-8000:]
        return output

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def needed_by(request, names) -> list[str]:
    """Those of the fixture ``names`` that a selected test of ``request``'s module uses."""
    items = [item for item in request.session.items if item.path == request.path]
    return [n for n in names if any(n in item.fixturenames for item in items)]


def needed_by_session(session, names) -> list[str]:
    """Those of the fixture ``names`` that a selected test of the session uses."""
    return [n for n in names if any(n in item.fixturenames for item in session.items)]
