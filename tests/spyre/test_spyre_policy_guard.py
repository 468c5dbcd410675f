"""Compiled graphs that decompose a spyre op are guarded on the compute dtype.

The decomposition bakes the compute dtype into the graph; after
set_compute_dtype, Dynamo must recompile rather than keep running the graph of
the old dtype. Inductor for a spyre device needs torch-spyre, so the graph is
compiled here by AOT autograd with the same decomposition table Inductor
would use (the decompositions run where they run under Inductor: inside
Dynamo's compile of the frame).
"""

from __future__ import annotations

import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close
from torch._dynamo.backends.common import aot_autograd

import spyre_ops
from spyre_ops.spyre import torch_spyre


def test_compute_dtype_change_recompiles(spyre_device):
    graphs: list[torch.fx.GraphModule] = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return gm

    backend = aot_autograd(fw_compiler=keep, decompositions=torch_spyre.decomposition_table())
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: torch.ops.spyre.rms_norm(x, [256], None, 1e-6), backend=backend,
                             fullgraph=True)
    x = (torch.randn(4, 256, generator=torch.Generator().manual_seed(0)) * 30).to(spyre_device)
    ref = rms_norm_ref(x.cpu(), [256], None, 1e-6)

    y16 = compiled(x).cpu()
    assert len(graphs) == 1
    ops = {n.target for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.rsqrt.default in ops and torch.ops.spyre.rms_norm.default not in ops  # decomposed
    assert (y16.double() - ref).abs().max() > 1e-5  # fp16 compute: worse than the fp32 tolerance

    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        y32 = compiled(x).cpu()
    assert len(graphs) == 2  # recompiled for the new compute dtype
    assert_close(y32, ref, torch.float32, torch.float32)

    y16_again = compiled(x).cpu()
    assert len(graphs) == 2  # the fp16 graph is still cached and guarded
    assert torch.equal(y16_again, y16)
    torch._dynamo.reset()
