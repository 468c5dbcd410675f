"""The torch release spyre_ops was compiled against must be the one it runs with.

A torch C++ extension loaded into another torch release fails with an
``undefined symbol`` error (or worse, misbehaves). setup.py records the build's
torch in ``spyre_ops/_build_info.py``; :func:`check` compares it with the
running torch before ``spyre_ops._C`` is loaded, and :func:`explain_load_error`
turns a failed load into an error that says what to do.
"""

from __future__ import annotations

import re

REBUILD = (
    "Rebuild spyre_ops against the installed torch: from its source directory, "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` "
    "(or `pip install .`, which builds against the installed torch release)."
)


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as ``2.13.0+cpu``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"spyre_ops: cannot read the torch version {version!r}")
    return int(match.group(1)), int(match.group(2))


def mismatch_message(built: str, running: str) -> str | None:
    """The error for an extension built against torch ``built`` loaded into torch ``running``, or None."""
    if release(built) == release(running):
        return None
    return (
        f"spyre_ops was built against torch {built}, but torch {running} is installed; "
        f"its C++ kernels only load into the torch release they were built against. {REBUILD}"
    )


def check(running: str) -> None:
    """Raises ImportError if the recorded build torch and ``running`` differ in release."""
    try:
        from ._build_info import TORCH_VERSION as built
    except ImportError:  # a build by an older setup.py: nothing recorded
        return
    message = mismatch_message(built, running)
    if message is not None:
        raise ImportError(message)


def explain_load_error(error: ImportError, running: str) -> ImportError:
    """An ImportError saying what to do when spyre_ops._C failed to load for want of a torch symbol."""
    return ImportError(
        f"spyre_ops: its C++ kernels (spyre_ops._C) do not load into torch {running}: {error}. "
        f"They were most likely built against another torch release. {REBUILD}"
    )
