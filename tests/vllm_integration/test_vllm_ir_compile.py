"""Under torch.compile, vLLM's IR lowering pass replaces each ``vllm_ir`` node by
the traced body of the selected provider: with the spyre provider first, the
post-grad graph holds ``spyre.*`` library nodes and no ``vllm_ir`` node."""

import pytest
import torch
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass

# force_disable_caches (each test must compile, not reuse) makes Dynamo say so
pytestmark = pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")

PRIORITY = ["spyre", "native"]
EPS = 1e-6


class _LowerAndRecord(CustomGraphPass):
    """Inductor post-grad hook: vLLM's ``VllmIRLoweringPass``, then a record of
    the ops left in the graph."""

    def __init__(self, lowering):
        self.lowering = lowering
        self.targets: list[str] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        self.lowering(graph)
        self.targets = [
            str(n.target) for n in graph.nodes if n.op == "call_function"
        ]

    def uuid(self):
        return self.lowering.uuid()


@pytest.fixture
def lowering_hook(ir):
    from vllm.compilation.passes.ir.lowering_pass import VllmIRLoweringPass
    from vllm.config import VllmConfig, set_current_vllm_config

    config = VllmConfig()
    with set_current_vllm_config(config):
        hook = _LowerAndRecord(VllmIRLoweringPass(config))
        with inductor_config.patch(post_grad_custom_post_pass=hook,
                                   force_disable_caches=True):
            yield hook


def toy_model(ir):
    def block(x, residual, weight):
        h = ir.ops.rms_norm(x, weight, EPS)
        h = h * 2.0
        out, new_residual = ir.ops.fused_add_rms_norm(h, residual, weight, EPS)
        return out + 1.0, new_residual

    return block


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_lowered_graph_holds_spyre_nodes(ir, lowering_hook, dtype):
    torch._dynamo.reset()
    block = toy_model(ir)
    x = torch.randn(17, 256, dtype=dtype)
    residual = torch.randn(17, 256, dtype=dtype)
    weight = torch.randn(256, dtype=dtype)
    x0, r0 = x.clone(), residual.clone()

    rms, fused = ir.ops.rms_norm, ir.ops.fused_add_rms_norm
    with rms.set_priority(PRIORITY), fused.set_priority(PRIORITY):
        compiled = torch.compile(block, backend="inductor", fullgraph=True)
        out, new_residual = compiled(x, residual, weight)

    targets = lowering_hook.targets
    assert lowering_hook.lowering.selected_impls["rms_norm"], targets
    assert set(lowering_hook.lowering.selected_impls["rms_norm"].values()) == {"spyre"}
    assert set(lowering_hook.lowering.selected_impls["fused_add_rms_norm"].values()) == {"spyre"}
    assert targets.count("spyre.rms_norm.default") == 1, targets
    # the in-place provider, traced after vLLM clones the activations
    assert targets.count("spyre.fused_add_rms_norm_.default") == 1, targets
    assert not any(t.startswith("vllm_ir.") for t in targets), targets
    # no trace of the native body (its rsqrt) either
    assert not any("rsqrt" in t for t in targets), targets

    # the functional overload left the inputs alone; results match eager mode
    # with the same provider (native rounds h differently by an ulp, which the
    # add then carries into new_residual: the conformance tests compare with native)
    assert torch.equal(x, x0) and torch.equal(residual, r0)
    with rms.set_priority(PRIORITY), fused.set_priority(PRIORITY):
        ref_out, ref_residual = block(x, residual, weight)
    tol = fused.get_tolerance(dtype)
    torch.testing.assert_close(new_residual, ref_residual, **tol)
    torch.testing.assert_close(out, ref_out, **tol)


def test_lowering_with_native_priority_has_no_spyre_node(ir, lowering_hook):
    """The control: the same model lowered with native only traces no spyre op."""
    torch._dynamo.reset()
    block = toy_model(ir)
    x, residual, weight = torch.randn(8, 128), torch.randn(8, 128), torch.randn(128)
    rms, fused = ir.ops.rms_norm, ir.ops.fused_add_rms_norm
    with rms.set_priority(["native"]), fused.set_priority(["native"]):
        torch.compile(block, backend="inductor", fullgraph=True)(x, residual, weight)
    targets = lowering_hook.targets
    assert targets and not any(t.startswith(("spyre.", "vllm_ir.")) for t in targets), targets
