"""An eager call on spyre tensors is one launch of a graph compiled once per signature.

The emulated device stands in for torch-spyre's compile (spyre_ops.emulator.
compile_graph): transfers() counts compiles, launches, the ops run inside
launched graphs and the ops run eagerly (each of which would be its own
compile and launch on torch-spyre).
"""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close

import spyre_ops
import spyre_ops.emulator as emulator
from spyre_ops.spyre import graphs

#: Eager ops a call may make around its graph launch: views and, for out= and
#: the in-place op, device-to-device copies of the result.
AROUND_THE_GRAPH = {"aten::view", "aten::_copy_from", "aten::empty", "aten::empty_strided", "aten::copy_"}


@pytest.fixture(autouse=True)
def fresh_graphs():
    graphs.clear()
    yield
    graphs.clear()


def _call(op: str, x, residual, w):
    if op == "rms_norm":
        return torch.ops.spyre.rms_norm(x, [x.shape[-1]], w, 1e-6)
    if op == "rms_norm.out":
        return torch.ops.spyre.rms_norm.out(x, [x.shape[-1]], w, 1e-6, out=torch.empty_like(x))
    if op == "fused_add_rms_norm":
        return torch.ops.spyre.fused_add_rms_norm(x, residual, [x.shape[-1]], w, 1e-6)
    return torch.ops.spyre.fused_add_rms_norm_(x.clone(), residual.clone(), [x.shape[-1]], w, 1e-6)


@pytest.mark.parametrize("op", ["rms_norm", "rms_norm.out", "fused_add_rms_norm", "fused_add_rms_norm_"])
def test_one_compile_then_one_launch_per_call(spyre_device, op):
    x = torch.randn(4, 5, 128, dtype=torch.float16).to(spyre_device)
    residual = torch.randn(4, 5, 128, dtype=torch.float16).to(spyre_device)
    w = torch.rand(128, dtype=torch.float16).to(spyre_device)
    with emulator.transfers() as first:
        _call(op, x, residual, w)
    for _ in range(3):
        with emulator.transfers() as t:
            _call(op, x, residual, w)
        assert (t.compiles, t.launches) == (0, 1), t
        assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, t
        # No compute op outside the graph: on torch-spyre each would be a one-op compile.
        assert set(t.ops) <= AROUND_THE_GRAPH, dict(t.ops)
        if op in ("rms_norm", "fused_add_rms_norm"):
            # x (rank 3, contiguous) reaches the graph as a 2-D view: no copy.
            assert set(t.ops) == {"aten::view"}, dict(t.ops)
        assert t.graph_ops["aten::mean"] == 1 and t.graph_ops["aten::rsqrt"] == 1, dict(t.graph_ops)
    assert (first.compiles, first.launches) == (1, 1), first
    assert (first.host_to_device, first.device_to_host) == (0, 0) and not first.fallbacks, first


def test_graphs_are_cached_per_signature(spyre_device):
    x = torch.randn(6, 64).to(spyre_device)
    w = torch.rand(64).to(spyre_device)
    calls = [
        lambda: torch.ops.spyre.rms_norm(x, [64], w, 1e-6),
        lambda: torch.ops.spyre.rms_norm(x, [64], None, 1e-6),  # no weight
        lambda: torch.ops.spyre.rms_norm(x, [64], w, 1e-5),  # another eps
        lambda: torch.ops.spyre.rms_norm(x[:3], [64], w, 1e-6),  # another shape
        lambda: torch.ops.spyre.rms_norm(x.half(), [64], w, 1e-6),  # another dtype
    ]
    for call in calls:
        with emulator.transfers() as t:
            call()
            call()
        assert t.compiles == 1 and t.launches == 2, t
    with spyre_ops.spyre.use_compute_dtype(torch.float32), emulator.transfers() as t:
        calls[0]()  # another compute dtype
    assert t.compiles == 1, t
    with emulator.transfers() as t:
        for call in calls:
            call()
    assert t.compiles == 0 and t.launches == len(calls), t
    assert len(graphs.cached_signatures()) == len(calls) + 1


def test_compute_dtype_change_is_followed(spyre_device):
    x = (torch.randn(3, 256) * 30).to(spyre_device)
    y16 = torch.ops.spyre.rms_norm(x, [256], None, 1e-6).cpu()
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        y32 = torch.ops.spyre.rms_norm(x, [256], None, 1e-6).cpu()
    ref = rms_norm_ref(x.cpu(), [256], None, 1e-6)
    assert_close(y32, ref, torch.float32, torch.float32)
    # fp16 compute is measurably less accurate than the float32 tolerance: it really ran in fp16.
    assert (y16.double() - ref).abs().max() > 1e-5


def test_views_are_made_dense_on_the_device(spyre_device):
    base = (torch.randn(8, 2, 96) * 10).to(spyre_device)
    for x in (base[1::3], base.transpose(0, 1), base[:, 1, :]):
        with emulator.transfers() as t:
            y = torch.ops.spyre.rms_norm(x, [96], None, 1e-6)
        assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, t
        assert t.launches == 1 and set(t.ops) <= AROUND_THE_GRAPH, dict(t.ops)
        assert_close(y, rms_norm_ref(x.cpu(), [96], None, 1e-6), torch.float32, torch.float16)


def test_the_graph_holds_no_spyre_op(spyre_device):
    # The compiled formula must not dispatch back into a spyre op (recursion).
    seen = []

    def keep(graph, example_inputs):
        seen.append(graph)
        return emulator.compile_graph(graph, example_inputs)

    previous = graphs.set_graph_compiler(keep)
    try:
        x = torch.randn(2, 64).to(spyre_device)
        torch.ops.spyre.fused_add_rms_norm(x, x.clone(), [64], torch.ones(64).to(spyre_device), 1e-6)
    finally:
        graphs.set_graph_compiler(previous)
    (graph,) = seen
    targets = {n.target.name() for n in graph.graph.nodes if n.op == "call_function"}
    assert targets and not any(t.startswith("spyre::") for t in targets), targets
    assert not {"aten::clamp", "aten::linalg_vector_norm", "aten::clamp_min", "aten::where"} & {t.split(".")[0] for t in targets}


def test_through_dynamo_each_signature_has_its_own_cache_entry(spyre_device):
    # torch-spyre's compile goes through Dynamo (dynamic=False). Compiling each
    # signature's own graph, more signatures than Dynamo's recompile limit (8)
    # never share, or exhaust, one cache entry (upstream issue #4677).
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    previous = graphs.set_graph_compiler(emulator.dynamo_compile_graph)
    try:
        limit = torch._dynamo.config.recompile_limit
        for tokens in range(1, limit + 4):
            x = (torch.randn(tokens, 64) * 7).to(spyre_device)
            for _ in range(2):
                with emulator.transfers() as t:
                    y = torch.ops.spyre.rms_norm(x, [64], None, 1e-6)
                assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, t
                assert set(t.ops) <= AROUND_THE_GRAPH, dict(t.ops)
            assert_close(y, rms_norm_ref(x.cpu(), [64], None, 1e-6), torch.float32, torch.float16)
        assert counters["stats"]["unique_graphs"] == limit + 3
        assert not counters["recompiles"] and not counters["frames"].get("recompile_limit"), dict(counters)
    finally:
        graphs.set_graph_compiler(previous)
        torch._dynamo.reset()


def test_torch_spyre_compile_errors_say_what_compiles(spyre_device):
    # torch-spyre's compile fails at the first call of the compiled graph (an InductorError); the
    # eager kernels re-raise it naming the inputs, the compute dtype and the layouts that compile.
    from torch._inductor.exc import InductorError

    from spyre_ops.spyre import graphs as spyre_graphs

    def failing(*args):
        raise InductorError(RuntimeError("Multi-arg pointwise with mixed EA: ..."), None)

    x = torch.empty(64, 128, dtype=torch.float16, device=spyre_device)
    run = spyre_graphs._explained(failing, [x])
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        with pytest.raises(RuntimeError, match=r"inputs \(64, 128\) torch.float16 under compute dtype torch.float32: "
                                               r".*mixed EA.*set_compute_dtype\(torch.float16\)") as info:
            run(x)
    assert isinstance(info.value.__cause__, InductorError)
    assert spyre_graphs._explained(lambda t: t + 1, [x])(x).shape == x.shape  # no error: the result
