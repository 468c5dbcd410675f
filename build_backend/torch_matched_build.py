"""PEP 517 build backend of spyre_ops: setuptools', building against the torch it will run with.

A torch C++ extension runs only with the torch release it was compiled against
(the C++ ABI changes between releases). With build isolation on (pip's
default), pip builds in a fresh environment and would install whatever torch
the build requirements admit, the newest it can find, even when the target
environment already has an older torch; the result fails at import with an
``undefined symbol`` error. So this backend asks for the same torch release as
the target environment's:

* ``SPYRE_OPS_BUILD_TORCH``, if set: the torch requirement to build with
  (e.g. ``2.13.0`` or ``torch==2.13.0``);
* else the torch installed in the environment of the interpreter that runs
  the build (pip runs these hooks with the target environment's interpreter,
  hiding its site-packages; a child process without pip's ``PYTHONPATH``
  sees them again);
* else (no torch there yet, or one older than spyre_ops supports, or a
  front end that builds in a separate virtualenv) ``torch>=2.13``: then the
  wheel requires the release it was built with (setup.py), so pip installs
  that same release to run it.

Everything else is setuptools' ``build_meta``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from setuptools.build_meta import *  # noqa: F401,F403  (the other hooks, unchanged)

#: The oldest torch spyre_ops builds against.
MINIMUM_TORCH = (2, 13)
ENV_VAR = "SPYRE_OPS_BUILD_TORCH"

_QUERY = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('torch'))\n"
    "except m.PackageNotFoundError:\n    pass\n"
)


def target_torch_version() -> str | None:
    """The torch version installed where this interpreter installs packages, or None."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _QUERY], env=env, capture_output=True, text=True, timeout=120, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def torch_requirement() -> str:
    """The torch requirement of the build environment (see the module docstring)."""
    wanted = os.environ.get(ENV_VAR, "").strip()
    if wanted:
        return wanted if wanted.startswith("torch") else f"torch=={wanted}"
    installed = target_torch_version()
    if installed and _release(installed)[:2] >= MINIMUM_TORCH:
        # The release only: a local label (+cpu, +cu128) names a build of the same C++ API.
        return "torch==" + ".".join(str(p) for p in _release(installed))
    return "torch>={}.{}".format(*MINIMUM_TORCH)


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    # setuptools' own hook would run setup.py, which needs torch: not yet.
    return [torch_requirement()]


def get_requires_for_build_editable(config_settings=None) -> list[str]:
    return [torch_requirement()]


def get_requires_for_build_sdist(config_settings=None) -> list[str]:
    return [torch_requirement()]

