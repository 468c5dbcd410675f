"""torch.compile: the ops trace as single nodes (no graph break, no decomposition)
and compile once for all token counts under dynamic shapes."""

from __future__ import annotations

import pytest
import torch
from expecttest import TestCase
from torch._dynamo.backends.common import aot_autograd
from functorch.compile import make_boxed_func
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor.utils import fresh_cache

from spyre_ops.nn import RMSNorm

HIDDEN = 64
TOKEN_COUNTS = [2, 3, 4, 7, 16, 31, 64, 100, 255, 512, 1000, 2047, 4096]


class Block(torch.nn.Module):
    """A residual block as an LLM layer has it: fused add+norm, projection, norm."""

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = RMSNorm(HIDDEN, eps=1e-6)
        self.proj = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.out_norm = RMSNorm(HIDDEN, eps=1e-6)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h, residual = self.input_norm(h, residual)
        return self.out_norm(self.proj(h))


def make_block() -> Block:
    torch.manual_seed(0)
    block = Block()
    with torch.no_grad():
        block.input_norm.weight.uniform_(0.5, 1.5)
        block.out_norm.weight.uniform_(0.5, 1.5)
    return block


def inputs(tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(tokens)
    return torch.randn(tokens, HIDDEN, generator=g), torch.randn(tokens, HIDDEN, generator=g)


def boxed(capture):
    """Wraps a graph-capturing compiler for AOTAutograd, which passes boxed arguments."""
    return lambda gm, example_inputs: make_boxed_func(capture(gm, example_inputs))


class TestGraphs(TestCase):
    def test_dynamo_graph_has_one_node_per_op(self) -> None:
        graphs: list[torch.fx.GraphModule] = []

        def capture(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        compiled = torch.compile(make_block(), backend=capture, fullgraph=True)
        compiled(*inputs(5))
        self.assertEqual(len(graphs), 1)
        targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
        self.assertEqual(
            targets, ["spyre.fused_add_rms_norm", "<built-in function getitem>",
                      "<built-in function linear>", "spyre.rms_norm"],
        )

    def test_aot_forward_graph(self) -> None:
        graphs: list[torch.fx.GraphModule] = []

        def capture(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        backend = aot_autograd(fw_compiler=boxed(capture))
        block = make_block().requires_grad_(False)
        compiled = torch.compile(block, backend=backend, fullgraph=True)
        h, r = inputs(5)
        torch.testing.assert_close(compiled(h, r), block(h, r))
        self.assertExpectedInline(
            graphs[0].code.strip(),
            """\
def forward(self, arg0_1, arg1_1, arg2_1, arg3_1, arg4_1):
    fused_add_rms_norm = torch.ops.spyre.fused_add_rms_norm.default(arg2_1, arg0_1, [64], arg1_1, 1e-06);  arg2_1 = arg0_1 = arg1_1 = None
    getitem = fused_add_rms_norm[0];  fused_add_rms_norm = None
    t = torch.ops.aten.t.default(arg3_1);  arg3_1 = None
    mm = torch.ops.aten.mm.default(getitem, t);  getitem = t = None
    rms_norm = torch.ops.spyre.rms_norm.default(mm, [64], arg4_1, 1e-06);  mm = arg4_1 = None
    return (rms_norm,)""",
        )

    def test_training_graph_holds_the_backward_op(self) -> None:
        graphs: list[torch.fx.GraphModule] = []

        def capture(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        backend = aot_autograd(fw_compiler=boxed(capture), bw_compiler=boxed(capture))
        block = make_block()
        compiled = torch.compile(block, backend=backend, fullgraph=True)
        h, r = inputs(5)
        compiled(h, r).sum().backward()
        grad_compiled = block.out_norm.weight.grad.clone()
        block.zero_grad()
        block(h, r).sum().backward()
        torch.testing.assert_close(grad_compiled, block.out_norm.weight.grad)
        backward_targets = [str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"]
        self.assertEqual(backward_targets.count("spyre.rms_norm_backward.default"), 2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_dynamic_compiles_once_for_all_token_counts(backend: str) -> None:
    block = make_block().requires_grad_(False)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=True)
    # Inductor's on-disk cache is keyed on the graph, not on the fake kernels:
    # compile afresh, so a changed fake kernel is really traced and compiled.
    with fresh_cache():
        for tokens in TOKEN_COUNTS:
            h, r = inputs(tokens)
            torch.testing.assert_close(compiled(h, r), block(h, r), atol=1e-5, rtol=1e-5)
    assert counter.frame_count == 1
    ops = [str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert ops.count("spyre.rms_norm") == 1 and ops.count("spyre.fused_add_rms_norm") == 1


def test_sizes_zero_and_one_are_specialized() -> None:
    # Dynamo specializes sizes 0 and 1 by design: a dynamic graph compiled for
    # n >= 2 tokens does not serve 1 or 0 tokens; each gets its own (correct) graph.
    block = make_block().requires_grad_(False)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=True)
    expected_frames = []
    for tokens in (8, 1, 0, 1, 0, 9):
        h, r = inputs(tokens)
        torch.testing.assert_close(compiled(h, r), block(h, r))
        expected_frames.append(counter.frame_count)
    assert expected_frames == [1, 2, 3, 3, 3, 3]
