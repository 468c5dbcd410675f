"""torch-spyre defines spyre::rms_norm itself (Python custom_op, at autoload). Each
test runs in a fresh interpreter that defines the op the way torch-spyre does,
then imports spyre_ops."""

from __future__ import annotations

import subprocess
import sys
import textwrap

DEFINE_LIKE_TORCH_SPYRE = """
import torch

SCHEMA = {schema!r}

@torch.library.custom_op("spyre::rms_norm", mutates_args=(), schema=SCHEMA)
def rms_norm(x, normalized_shape, weight=None, eps=1e-05):
    raise AssertionError("torch-spyre's eager body ran instead of spyre_ops' CPU kernel")

@rms_norm.register_fake
def _(x, normalized_shape, weight=None, eps=1e-05):
    return torch.empty_like(x)
"""

TORCH_SPYRE_SCHEMA = (
    "(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, float eps=1e-05) -> Tensor"
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_adopts_an_existing_op_with_the_same_schema():
    proc = run(
        DEFINE_LIKE_TORCH_SPYRE.format(schema=TORCH_SPYRE_SCHEMA)
        + """
import spyre_ops
from spyre_ops import _library
assert _library.adopted == ["rms_norm"], _library.adopted

# Our CPU kernel serves the adopted op (their body would raise).
x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
w = torch.randn(16, dtype=torch.float64, requires_grad=True)
y = torch.ops.spyre.rms_norm(x, [16], w, 1e-5)
ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
torch.testing.assert_close(y, ref)

# Our autograd and fake kernels are in place too.
assert torch.autograd.gradcheck(lambda a, b: torch.ops.spyre.rms_norm(a, [16], b, 1e-5), (x, w))
torch.library.opcheck(torch.ops.spyre.rms_norm.default, (x.detach().float(), [16], None, 1e-5))
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode() as mode:
    try:
        torch.ops.spyre.rms_norm(mode.from_tensor(torch.randn(3, 16)), [15], None, 1e-5)
        raise SystemExit("fake kernel accepted a bad normalized_shape")
    except RuntimeError as e:
        assert "does not match the trailing dimensions" in str(e), e
print("ADOPTED")
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "ADOPTED" in proc.stdout


def test_refuses_an_existing_op_with_another_schema():
    other = "(Tensor x, float eps) -> Tensor"
    proc = run(
        DEFINE_LIKE_TORCH_SPYRE.format(schema=other)
        + """
# Loading the shared object itself never raises.
import importlib.util, os
spec = importlib.util.find_spec("spyre_ops")
so = [f for f in os.listdir(spec.submodule_search_locations[0]) if f.startswith("_C.")][0]
torch.ops.load_library(os.path.join(spec.submodule_search_locations[0], so))
print("LOADED")
import spyre_ops
"""
    )
    assert "LOADED" in proc.stdout, proc.stderr
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr
    assert "already defined: spyre::rms_norm(Tensor x, float eps) -> Tensor" in proc.stderr
    assert "spyre_ops needs: spyre::rms_norm(Tensor x, SymInt[] normalized_shape" in proc.stderr


def test_importing_twice_in_one_process_is_harmless():
    proc = run(
        """
import importlib, torch, spyre_ops
importlib.reload(spyre_ops)
print(spyre_ops.rms_norm(torch.ones(2, 4), 4, eps=0.0).sum().item())
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8.0"  # rows of ones normalize to ones exactly
