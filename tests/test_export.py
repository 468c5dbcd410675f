"""Deployment: a model using the spyre ops through torch.export and AOTInductor.

Each package is made in one process and loaded in a fresh one, as a deployed
service would load it: with ``import spyre_ops`` first it runs and matches eager;
without it, loading fails with torch's error naming the missing spyre op.
"""

from __future__ import annotations

import os

import pytest
import torch
from subprocess_python import run_python

MAKE = r"""
import sys, torch, spyre_ops
from spyre_ops.nn import RMSNorm

class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_norm = RMSNorm(64, eps=1e-6)
        self.proj = torch.nn.Linear(64, 64, bias=False)
        self.out_norm = RMSNorm(64, eps=1e-6)

    def forward(self, h, residual):
        h, residual = self.input_norm(h, residual)
        return self.out_norm(self.proj(h)), residual

torch.manual_seed(0)
block = Block().eval()
with torch.no_grad():
    block.input_norm.weight.uniform_(0.5, 1.5)
    block.out_norm.weight.uniform_(0.5, 1.5)
tokens = torch.export.Dim("tokens", min=2, max=4096)
ep = torch.export.export(block, (torch.randn(8, 64), torch.randn(8, 64)),
                         dynamic_shapes=({0: tokens}, {0: tokens}))
targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
assert {"spyre.fused_add_rms_norm.default", "spyre.rms_norm.default"} <= targets, targets
out = sys.argv[1]
torch.export.save(ep, out + "/exported.pt2")
# -O0 for the C++ wrapper: compiling it is most of this test's time.
torch._inductor.aoti_compile_and_package(ep, package_path=out + "/aoti.pt2",
                                         inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"})
# Another token count than the one exported with: the packages are dynamic.
h, r = torch.randn(37, 64), torch.randn(37, 64)
torch.save({"h": h, "r": r, "eager": block(h, r)}, out + "/expected.pt")
"""

LOAD = r"""
import sys, torch
if sys.argv[3] == "import":
    import spyre_ops
out, kind = sys.argv[1], sys.argv[2]
case = torch.load(out + "/expected.pt")
if kind == "export":
    program = torch.export.load(out + "/exported.pt2").module()
else:
    program = torch._inductor.aoti_load_package(out + "/aoti.pt2")
got = program(case["h"], case["r"])
torch.save(tuple(got), out + "/" + kind + ".pt")
"""


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    # Inductor's on-disk cache of its own: nothing compiled elsewhere is reused.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(out / "inductor_cache")}
    made = run_python(MAKE, str(out), env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    return out


@pytest.mark.parametrize("kind", ["export", "aoti"])
def test_loads_in_a_fresh_process_after_import_spyre_ops(packages, kind):
    loaded = run_python(LOAD, str(packages), kind, "import")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    case = torch.load(packages / "expected.pt")
    got = torch.load(packages / f"{kind}.pt")
    expected_out, expected_residual = case["eager"]
    assert got[0].shape == (37, 64)
    # The spyre ops are the same kernels as eager; AOTInductor compiles the
    # projection between them with its own matmul, hence the tolerance.
    torch.testing.assert_close(got[1], expected_residual, atol=0, rtol=0)
    torch.testing.assert_close(got[0], expected_out, atol=1e-5, rtol=1e-5)
    if kind == "export":
        assert torch.equal(got[0], expected_out)


def test_exported_program_without_import_spyre_ops_fails_naming_the_op(packages):
    loaded = run_python(LOAD, str(packages), "export", "no-import")
    assert loaded.returncode != 0
    # What the user sees: torch's deserialization error, and above it the op it
    # could not resolve with the advice to import the library that defines it.
    assert "RuntimeError: We ran into an error when deserializing the saved file" in loaded.stderr
    assert "failed to resolve torch.ops.spyre.fused_add_rms_norm.default" in loaded.stderr
    assert "Please import the custom op to register it before deserializing" in loaded.stderr


def test_aoti_package_without_import_spyre_ops_fails_naming_the_op(packages):
    loaded = run_python(LOAD, str(packages), "aoti", "no-import")
    assert loaded.returncode != 0
    assert "RuntimeError: Could not find schema for spyre::fused_add_rms_norm" in loaded.stderr
