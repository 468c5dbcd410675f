"""The spyre ops on spyre tensors under opcheck and torch.compile.

torch.compile uses backend="aot_eager": Inductor needs a device backend for
"spyre" that only torch-spyre supplies. What this shows is that the ops trace
as single graph nodes on a spyre device, with dynamic token counts and no
graph break or recompilation; the compiled graph runs the Spyre kernels.
"""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close

import spyre_ops
import spyre_ops.emulator as emulator
from spyre_ops.nn import RMSNorm

ALL_CHECKS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_opcheck_on_spyre_tensors(spyre_device, dtype):
    x = torch.randn(5, 64, dtype=dtype).to(spyre_device)
    residual = torch.randn(5, 64, dtype=dtype).to(spyre_device)
    w = torch.rand(64, dtype=dtype).to(spyre_device)
    cases = [
        (torch.ops.spyre.rms_norm.default, (x, [64], w, 1e-6)),
        (torch.ops.spyre.rms_norm.default, (x, [64], None, 1e-5)),
        (torch.ops.spyre.fused_add_rms_norm.default, (x, residual, [64], w, 1e-6)),
        (torch.ops.spyre.fused_add_rms_norm_.default, (x.clone(), residual.clone(), [64], w, 1e-6)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=ALL_CHECKS)


def test_opcheck_on_spyre_tensors_that_require_grad(spyre_device):
    # With inputs that require grad, the AOT check also runs the backward (on
    # the CPU fallback, see test_spyre_autograd.py). torch's
    # test_autograd_registration refuses devices other than CPU/CUDA/XPU when
    # inputs require grad ("NYI"), so the autograd kernel's registration for
    # spyre tensors is checked on the dispatcher instead.
    x = torch.randn(5, 64).to(spyre_device).requires_grad_()
    residual = torch.randn(5, 64).to(spyre_device).requires_grad_()
    w = torch.rand(64).to(spyre_device).requires_grad_()
    checks = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.spyre.rms_norm.default, (x, [64], w, 1e-6), test_utils=checks)
    torch.library.opcheck(
        torch.ops.spyre.fused_add_rms_norm.default, (x, residual, [64], w, 1e-6), test_utils=checks
    )
    for name in ("spyre::rms_norm", "spyre::fused_add_rms_norm"):
        table = torch._C._dispatch_dump_table(name).splitlines()
        (entry,) = [line for line in table if line.startswith("AutogradPrivateUse1:")]
        assert "[autograd kernel]" in entry, entry  # not the backend fallback


class SmallModel(torch.nn.Module):
    """norm -> linear -> fused residual-add norm, as in a decoder layer."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(hidden, eps=1e-6, dtype=torch.float16)
        self.proj = torch.nn.Linear(hidden, hidden, bias=False, dtype=torch.float16)
        self.norm2 = RMSNorm(hidden, eps=1e-6, dtype=torch.float16)
        with torch.no_grad():
            self.norm1.weight.uniform_(0.5, 1.5)
            self.norm2.weight.uniform_(0.5, 1.5)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, residual = self.norm2(self.proj(self.norm1(h)), h)
        return out, residual


def test_compile_aot_eager_dynamic_one_graph(spyre_device):
    from torch._dynamo.utils import counters

    hidden = 128
    torch.manual_seed(0)
    model = SmallModel(hidden).to(spyre_device)
    graphs: list[torch.fx.GraphModule] = []
    aot_graphs: list[torch.fx.GraphModule] = []

    def keep(g: torch.fx.GraphModule, _inputs):
        aot_graphs.append(g)
        return g

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        # aot_eager with a counter: Dynamo graph -> AOT autograd -> run the AOT graph eagerly.
        graphs.append(gm)
        return torch._dynamo.backends.common.aot_autograd(fw_compiler=keep, bw_compiler=keep)(gm, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend=counting_backend, fullgraph=True, dynamic=True)
    backend_calls = []
    with torch.no_grad():
        for tokens in (2, 3, 17, 128, 1000, 2048):
            h = (torch.randn(tokens, hidden) * 50).to(torch.float16).to(spyre_device)
            before = len(graphs)
            out, residual = compiled(h)
            backend_calls.append(len(graphs) - before)
            eager_out, eager_residual = model(h)
            assert out.device.type == "spyre"
            torch.testing.assert_close(out, eager_out, atol=0, rtol=0)
            torch.testing.assert_close(residual, eager_residual, atol=0, rtol=0)
    # One compilation, on the first call; no later batch size recompiles.
    assert backend_calls == [1, 0, 0, 0, 0, 0], backend_calls
    assert counters["stats"]["unique_graphs"] == 1
    targets = [n.target for n in graphs[-1].graph.nodes if n.op == "call_function"]
    # (Dynamo's graph holds the op packets; AOT's would hold .default.)
    assert torch.ops.spyre.rms_norm in targets
    assert torch.ops.spyre.fused_add_rms_norm in targets
    aot_targets = [n.target for n in aot_graphs[-1].graph.nodes if n.op == "call_function"]
    assert torch.ops.spyre.rms_norm.default in aot_targets
    assert torch.ops.spyre.fused_add_rms_norm.default in aot_targets


def test_compile_aot_eager_backend_matches_reference(spyre_device):
    def f(x, w):
        return spyre_ops.rms_norm(x, x.shape[-1], w, 1e-6)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    for tokens in (2, 64, 2048):
        x = (torch.randn(tokens, 256) * 1000).to(torch.float16)
        w = torch.rand(256, dtype=torch.float16) + 0.5
        y = compiled(x.to(spyre_device), w.to(spyre_device))
        assert y.device.type == "spyre"
        assert_close(y, rms_norm_ref(x, [256], w, 1e-6), torch.float16, torch.float16)


def test_compiled_call_stays_on_device(spyre_device):
    compiled = torch.compile(
        lambda x: torch.ops.spyre.rms_norm(x, [64], None, 1e-6), backend="aot_eager", fullgraph=True
    )
    x = torch.randn(8, 64, dtype=torch.float16).to(spyre_device)
    compiled(x)  # compile outside the measurement
    with emulator.transfers() as t:
        compiled(x)
    assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, t
