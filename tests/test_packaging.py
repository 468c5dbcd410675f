"""Installing: the build matches the torch it will run with, and a mismatch is a clear error.

The real mismatch (an extension built against torch 2.14.1 imported next to
2.13.0) is a symbol error from the dynamic loader; these tests fake the recorded
build version or the loader's error in a fresh process and check what the user
sees. The build backend's choice of torch is checked with pip's way of hiding
the target environment during an isolated build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from subprocess_python import ROOT, run_python

import spyre_ops
from spyre_ops import _torch_check


def _load_backend():
    spec = importlib.util.spec_from_file_location(
        "torch_matched_build", ROOT / "build_backend" / "torch_matched_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_recorded_the_torch_it_compiled_against():
    from spyre_ops import _build_info

    assert _torch_check.release(_build_info.TORCH_VERSION) == _torch_check.release(torch.__version__)


def test_mismatch_message_names_both_versions():
    message = _torch_check.mismatch_message("2.14.1", "2.13.0+cpu")
    assert message is not None
    assert "built against torch 2.14.1, but torch 2.13.0+cpu is installed" in message
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in message
    assert _torch_check.mismatch_message("2.13.0", "2.13.0+cpu") is None
    assert _torch_check.mismatch_message("2.13.1+cu128", "2.13.0") is None


def test_import_with_a_different_recorded_torch_fails_before_loading_the_kernels():
    proc = run_python(
        """
        import sys, types, torch
        sys.modules["spyre_ops._build_info"] = types.SimpleNamespace(TORCH_VERSION="2.99.0")
        try:
            import spyre_ops
        except ImportError as e:
            print(e)
        assert "spyre_ops._C" not in sys.modules
        print("torch", torch.__version__)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    message, running = proc.stdout.strip().splitlines()
    assert running == f"torch {torch.__version__}"
    assert message.startswith(f"spyre_ops was built against torch 2.99.0, but torch {torch.__version__} is installed")


def test_undefined_symbol_at_load_becomes_a_clear_error():
    # What the loader says for a module built against another torch, with no
    # recorded version to check first.
    proc = run_python(
        """
        import sys, types, importlib.abc, torch
        sys.modules["spyre_ops._build_info"] = types.SimpleNamespace(TORCH_VERSION=torch.__version__)

        class Loader(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "spyre_ops._C":
                    raise ImportError("/x/_C.so: undefined symbol: _ZN5torch8autograd13_wrap_outputsE")

        sys.meta_path.insert(0, Loader())
        try:
            import spyre_ops
        except ImportError as e:
            print(e)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.strip()
    assert out.startswith(f"spyre_ops: its C++ kernels (spyre_ops._C) do not load into torch {torch.__version__}")
    assert "undefined symbol" in out and "built against another torch release" in out


def test_build_backend_pins_the_target_environments_torch(tmp_path):
    # pip runs the backend's hooks with the target environment's interpreter, its
    # site-packages hidden by a sitecustomize on PYTHONPATH (pip's build_env.py).
    # Do the same, and check the backend still finds this environment's torch.
    import site

    import setuptools

    # The build environment: setuptools (symlinked into an overlay, as pip installs
    # it there), no torch.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    site_packages = Path(setuptools.__file__).parent.parent
    for name in ("setuptools", "_distutils_hack", "pkg_resources"):
        if (site_packages / name).exists():
            (overlay / name).symlink_to(site_packages / name)
    hide = tmp_path / "sitecustomize.py"
    hide.write_text(
        "import sys\n"
        f"hidden = {sorted(set(site.getsitepackages()) | {site.getusersitepackages()})!r}\n"
        f"sys.path[:] = [p for p in sys.path if p not in hidden] + [{str(overlay)!r}]\n"
    )
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'build_backend')!r})\n"
        "try:\n    import torch\n    print('torch visible')\nexcept ImportError:\n    print('torch hidden')\n"
        "import torch_matched_build as b\n"
        "print(b.get_requires_for_build_wheel())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SPYRE_OPS_BUILD_TORCH"}
    env.update(PYTHONPATH=str(tmp_path), PYTHONNOUSERSITE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hidden, requires = proc.stdout.strip().splitlines()
    assert hidden == "torch hidden"
    release = re.match(r"\d+\.\d+\.\d+", torch.__version__).group(0)
    assert requires == str([f"torch=={release}"])


def test_build_backend_override_and_fallback(monkeypatch):
    backend = _load_backend()
    monkeypatch.setenv("SPYRE_OPS_BUILD_TORCH", "2.14.1")
    assert backend.get_requires_for_build_wheel() == ["torch==2.14.1"]
    monkeypatch.setenv("SPYRE_OPS_BUILD_TORCH", "torch>=2.14,<2.15")
    assert backend.get_requires_for_build_editable() == ["torch>=2.14,<2.15"]
    monkeypatch.delenv("SPYRE_OPS_BUILD_TORCH")
    for installed, expected in ((None, "torch>=2.13"), ("2.12.1", "torch>=2.13"), ("2.14.1+cu130", "torch==2.14.1")):
        monkeypatch.setattr(backend, "target_torch_version", lambda v=installed: v)
        assert backend.get_requires_for_build_wheel() == [expected]


def test_pyproject_uses_the_backend_and_pins_no_static_torch():
    tomllib = pytest.importorskip("tomllib")

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["build-system"]["build-backend"] == "torch_matched_build"
    assert config["build-system"]["backend-path"] == ["build_backend"]
    assert not any(r.startswith("torch") for r in config["build-system"]["requires"])
    assert "dependencies" in config["project"]["dynamic"]
    # No extra that pulls a vLLM build the installed torch cannot run (docs/install.md).
    assert "vllm" not in config["project"].get("optional-dependencies", {})
