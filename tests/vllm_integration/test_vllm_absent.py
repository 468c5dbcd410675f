"""Without vLLM, or with a vLLM that has no vLLM IR (0.17; 0.32-0.34 have it), importing
spyre_ops.vllm works and register() returns False, saying why. Each case runs
in a fresh interpreter where the module is blocked."""

import subprocess
import sys

SNIPPET = """
import sys
{block}
import logging
logging.basicConfig(level=logging.WARNING)
import spyre_ops.vllm as v
print("REGISTERED", v.register())
print("REASON", v.reason_not_registered)
print("IS_REGISTERED", v.is_registered())
"""


def _run(block: str) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", SNIPPET.format(block=block)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def test_without_vllm():
    out, err = _run("sys.modules['vllm'] = None  # as if not installed")
    assert "REGISTERED False" in out
    assert "REASON vLLM is not installed" in out
    assert "IS_REGISTERED False" in out
    assert "vLLM IR provider not registered: vLLM is not installed" in err


def test_without_vllm_ir():
    out, err = _run("import vllm\nsys.modules['vllm.ir'] = None  # as in a vLLM without vLLM IR")
    assert "REGISTERED False" in out
    assert "has no vLLM IR" in out and "register_oot_layers" in out
    assert "vLLM IR provider not registered" in err


def test_with_vllm_ir():
    """The control: the same script with nothing blocked registers."""
    out, _ = _run("")
    assert "REGISTERED True" in out and "REASON None" in out and "IS_REGISTERED True" in out
