"""A weight of another dtype than x's in compiled graphs: what the decompositions hand torch-spyre.

torch-spyre's compiler rejects a pointwise op that combines a tensor converted on the device
between 16-bit and float32 with an unconverted one ("Multi-arg pointwise with mixed EA"; checked on
its compiler front end: fp16 x with an fp32 weight, fp32 x with fp16, bf16 x with fp32, in either
compute dtype, for its own ``F.rms_norm`` too). So a weight graph input of another dtype is
converted outside the formula's kernel, by the extern op ``spyre_ops::spyre_weight_in_dtype``
(cached per weight and version, as the eager kernels convert it); a float32 weight the graph computes
from a 16-bit tensor (vLLM's GemmaRMSNorm: ``1 + w.float()``) is converted inside the graph, which
torch-spyre lays out (converting it back to 16-bit restores x's arrangement).
"""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import spyre_ops
import spyre_ops.emulator as emulator
from spyre_ops.spyre import torch_spyre, weights

EXTERN = weights.WEIGHT_IN_DTYPE
PAIRS = [(torch.float16, torch.float32), (torch.float32, torch.float16), (torch.bfloat16, torch.float32)]
HIDDEN = 128


def _graph(fn, *args):
    return make_fx(fn, decomposition_table=torch_spyre.decomposition_table(), tracing_mode="fake")(*args)


def _calls(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def _inputs(device, x_dtype, w_dtype):
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(6, HIDDEN, generator=g) * 3).to(x_dtype).to(device)
    r = torch.randn(6, HIDDEN, generator=g).to(x_dtype).to(device)
    w = (torch.rand(HIDDEN, generator=g) + 0.5).to(w_dtype).to(device)
    return x, r, w


OPS = {
    "rms_norm": lambda x, r, w: torch.ops.spyre.rms_norm(x, [HIDDEN], w, 1e-6),
    "fused_add_rms_norm": lambda x, r, w: torch.ops.spyre.fused_add_rms_norm(x, r, [HIDDEN], w, 1e-6),
    "gemma_rms_norm": lambda x, r, w: torch.ops.spyre_ops.gemma_rms_norm(x, [HIDDEN], w, 1e-6),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("compute", [torch.float16, torch.float32])
@pytest.mark.parametrize(("x_dtype", "w_dtype"), PAIRS)
def test_weight_input_of_another_dtype_is_converted_outside_the_formula(spyre_device, op, compute, x_dtype, w_dtype):
    x, r, w = _inputs(spyre_device, x_dtype, w_dtype)
    with spyre_ops.spyre.use_compute_dtype(compute):
        gm = _graph(OPS[op], x, r, w)
    w_node = [n for n in gm.graph.nodes if n.op == "placeholder"][2]
    # The weight's only user is the extern conversion, to x's dtype; the formula sees its result.
    assert [u.target for u in w_node.users] == [EXTERN], [u.format_node() for u in w_node.users]
    (call,) = _calls(gm, EXTERN)
    assert call.args[1] == x_dtype and call.meta["val"].dtype == x_dtype


@pytest.mark.parametrize(("x_dtype", "w_dtype"), PAIRS)
def test_compiled_graph_equals_the_eager_kernel_and_converts_once(spyre_device, x_dtype, w_dtype):
    x, r, w = _inputs(spyre_device, x_dtype, w_dtype)
    gm = _graph(OPS["fused_add_rms_norm"], x, r, w)
    weights.clear()
    out, summed = gm(x, r, w)
    assert weights.cached() == 1
    k_out, k_sum = torch.ops.spyre.fused_add_rms_norm(x, r, [HIDDEN], w, 1e-6)
    assert torch.equal(out.cpu(), k_out.cpu()) and torch.equal(summed.cpu(), k_sum.cpu())
    with emulator.transfers() as t:  # the same weight and version: no conversion, no copy
        gm(x, r, w)
    assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks
    w.mul_(2.0)  # a new version is converted again
    out2, _ = gm(x, r, w)
    assert torch.equal(out2.cpu(), torch.ops.spyre.fused_add_rms_norm(x, r, [HIDDEN], w, 1e-6)[0].cpu())


@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16])
def test_gemma_weight_computed_in_the_graph_is_converted_in_the_graph(spyre_device, x_dtype):
    # vLLM's GemmaRMSNorm passes 1 + w.float() (w in the model's 16-bit dtype) to the IR ops, whose
    # spyre provider calls these ops: the conversion stays in the graph, no extern call.
    x, r, w = _inputs(spyre_device, x_dtype, x_dtype)

    def gemma_like(x, r, w):
        weight = 1.0 + w.float()
        out = torch.ops.spyre.rms_norm(x, [HIDDEN], weight, 1e-6)
        torch.ops.spyre.fused_add_rms_norm_(x, r, [HIDDEN], weight, 1e-6)
        return out

    gm = _graph(gemma_like, x, r, w)
    assert not _calls(gm, EXTERN), gm.code
    # The graph converts the weight on the device, as the formula's first step does with a weight of
    # x's dtype (the eager kernels' host conversion of an fp32 weight to bf16 rounds to IEEE bf16).
    reference = torch.ops.spyre.rms_norm(x, [HIDDEN], (1.0 + w.float()).to(x_dtype), 1e-6)
    assert torch.equal(gm(x.clone(), r.clone(), w).cpu(), reference.cpu())


def test_same_dtype_weight_has_no_extern_call(spyre_device):
    x, r, w = _inputs(spyre_device, torch.float16, torch.float16)
    for fn in OPS.values():
        assert not _calls(_graph(fn, x, r, w), EXTERN)


def test_weight_in_dtype_op(spyre_device):
    w = torch.rand(HIDDEN).to(spyre_device)
    converted = weights.weight_in_dtype(w, torch.float16)
    assert converted.dtype == torch.float16 and converted.device == w.device
    same = weights.weight_in_dtype(w, torch.float32)
    assert torch.equal(same.cpu(), w.cpu()) and same.data_ptr() != w.data_ptr()  # never an alias
    torch.library.opcheck(torch.ops.spyre_ops.spyre_weight_in_dtype, (w, torch.float16),
                          test_utils=("test_schema", "test_faketensor"))
