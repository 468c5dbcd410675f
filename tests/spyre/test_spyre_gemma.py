"""The Gemma ops (``spyre_ops::gemma_*``) on the emulated spyre device: the Spyre kernels
against the float64 reference under both compute dtypes, one launch per eager call with
the offset inside the graph (no host round trip, no extra device op outside it), the
Inductor decompositions (same bits as the kernels), opcheck and torch.compile."""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close, device_sum, held
from torch.fx.experimental.proxy_tensor import make_fx

import spyre_ops
import spyre_ops.emulator as emulator
from spyre_ops.nn import GemmaRMSNorm
from spyre_ops.spyre import graphs, torch_spyre

gemma = torch.ops.spyre_ops
COMPUTE = [torch.float16, torch.float32]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _inputs(dtype, shape=(6, 4, 192), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 300).to(dtype)
    residual = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    w = (torch.randn(shape[-1], generator=g, dtype=torch.float64) * 0.5).to(dtype)  # Gemma: scale 1 + w
    return x, residual, w


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_kernels_match_reference(spyre_device, dtype, compute, with_weight):
    x, residual, w = _inputs(dtype)
    w = w if with_weight else None
    xs, rs = x.to(spyre_device), residual.to(spyre_device)
    ws = None if w is None else w.to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        y = spyre_ops.gemma_rms_norm(xs, 192, ws)
        out, summed = spyre_ops.gemma_fused_add_rms_norm(xs, rs, 192, ws)
        o = torch.empty_like(xs)
        spyre_ops.gemma_rms_norm(xs, 192, ws, out=o)
        xi, ri = xs.clone(), rs.clone()
        spyre_ops.gemma_fused_add_rms_norm_(xi, ri, 192, ws)
    assert y.device.type == "spyre" and y.dtype == dtype
    x, w = held(xs), None if ws is None else held(ws)  # the values the device holds
    assert_close(y, rms_norm_ref(x, [192], w, 1e-6, weight_offset=1.0), dtype, compute)
    ref_sum = device_sum(xs, rs)
    assert_close(out, rms_norm_ref(ref_sum, [192], w, 1e-6, weight_offset=1.0), dtype, compute)
    assert torch.equal(held(summed).double(), ref_sum)
    assert torch.equal(o.cpu(), y.cpu())
    assert torch.equal(xi.cpu(), out.cpu()) and torch.equal(ri.cpu(), summed.cpu())


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm"])
def test_one_launch_per_call_with_the_offset_in_the_graph(spyre_device, op):
    graphs.clear()
    x, residual, w = (t.to(spyre_device) for t in _inputs(torch.float16))
    call = {
        "rms_norm": lambda: gemma.gemma_rms_norm(x, [192], w, 1e-6),
        "fused_add_rms_norm": lambda: gemma.gemma_fused_add_rms_norm(x, residual, [192], w, 1e-6),
    }[op]
    plain_call = {
        "rms_norm": lambda: torch.ops.spyre.rms_norm(x, [192], w, 1e-6),
        "fused_add_rms_norm": lambda: torch.ops.spyre.fused_add_rms_norm(x, residual, [192], w, 1e-6),
    }[op]
    call()
    with emulator.transfers() as t:
        call()
    assert (t.compiles, t.launches) == (0, 1), t
    assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, t
    assert set(t.ops) == {"aten::view"}, dict(t.ops)  # no 1 + w made outside the graph
    plain_call()
    with emulator.transfers() as p:
        plain_call()
    # The offset is one add inside the graph: the plain op's graph plus one aten::add
    # (and the allocation of its result).
    extra = t.graph_ops - p.graph_ops
    extra.pop("aten::empty", None)
    assert extra == {"aten::add": 1} and not p.graph_ops - t.graph_ops, (t.graph_ops, p.graph_ops)
    graphs.clear()


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decompositions_equal_the_kernels_bitwise(spyre_device, dtype, compute):
    x, residual, w = (t.to(spyre_device) for t in _inputs(dtype, shape=(3, 3, 192)))
    table = torch_spyre.decomposition_table()
    decompose = {op: table[getattr(gemma, f"gemma_{op}").default]
                 for op in ("rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_")}
    with spyre_ops.spyre.use_compute_dtype(compute):
        for weight in (w, None):
            assert torch.equal(gemma.gemma_rms_norm(x, [192], weight, 1e-6).cpu(),
                               decompose["rms_norm"](x, [192], weight, 1e-6).cpu())
        for a, b in zip(gemma.gemma_fused_add_rms_norm(x, residual, [192], w, 1e-6),
                        decompose["fused_add_rms_norm"](x, residual, [192], w, 1e-6)):
            assert torch.equal(a.cpu(), b.cpu())
        xk, rk, xt, rt = x.clone(), residual.clone(), x.clone(), residual.clone()
        gemma.gemma_fused_add_rms_norm_(xk, rk, [192], w, 1e-6)
        assert decompose["fused_add_rms_norm_"](xt, rt, [192], w, 1e-6) is None
        assert torch.equal(xk.cpu(), xt.cpu()) and torch.equal(rk.cpu(), rt.cpu())
    assert decompose["rms_norm"](x.cpu(), [192]) is NotImplemented  # other devices keep their kernel


def test_decomposed_graph_traces_the_formula(spyre_device):
    x, residual, w = (t.to(spyre_device) for t in _inputs(torch.float16))

    def model(x, residual, w):
        out, summed = gemma.gemma_fused_add_rms_norm(x, residual, [192], w, 1e-6)
        return gemma.gemma_rms_norm(out, [192], w, 1e-6), summed

    gm = make_fx(model, decomposition_table=torch_spyre.decomposition_table(), tracing_mode="fake")(x, residual, w)
    names = {n.target.name().split(".")[0] for n in gm.graph.nodes if n.op == "call_function"}
    assert "aten::rsqrt" in names and not any(n.startswith(("spyre::", "spyre_ops::")) for n in names), names


def test_opcheck_and_compile_on_spyre_tensors(spyre_device):
    x, residual, w = (t.to(spyre_device) for t in _inputs(torch.float16, shape=(5, 64)))
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in [
        (gemma.gemma_rms_norm.default, (x, [64], w, 1e-6)),
        (gemma.gemma_fused_add_rms_norm.default, (x, residual, [64], w, 1e-6)),
        (gemma.gemma_fused_add_rms_norm_.default, (x.clone(), residual.clone(), [64], w, 1e-6)),
    ]:
        torch.library.opcheck(op, args, test_utils=checks)

    torch.manual_seed(0)
    norm = GemmaRMSNorm(64, dtype=torch.float16).to(spyre_device)
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5)
    compiled = torch.compile(norm, backend="aot_eager", fullgraph=True, dynamic=True)
    for tokens in (2, 5, 33):
        h = torch.randn(tokens, 64, dtype=torch.float16).to(spyre_device)
        r = torch.randn(tokens, 64, dtype=torch.float16).to(spyre_device)
        with torch.no_grad():
            for a, b in zip(compiled(h, r), norm(h, r)):
                assert a.device.type == "spyre" and torch.equal(a.cpu(), b.cpu())


def test_errors_name_the_gemma_op(spyre_device):
    x = torch.randn(4, 64, dtype=torch.float16).to(spyre_device)
    with pytest.raises(RuntimeError, match=r"spyre_ops::gemma_rms_norm: on Spyre only the last dimension"):
        gemma.gemma_rms_norm(x.view(4, 2, 32), [2, 32], None, 1e-6)
    with pytest.raises(RuntimeError, match=r"spyre_ops::gemma_fused_add_rms_norm: residual has dtype"):
        gemma.gemma_fused_add_rms_norm(x, x.float(), [64], None, 1e-6)
