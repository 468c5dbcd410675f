"""A weight of another dtype than x's on the Spyre path: brought to x's dtype once per weight and
version, outside the graph (torch-spyre rejects graphs that mix converted and unconverted fp32
tensors); and the device op set of the formula's graph, which its device cost depends on."""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close, held

import spyre_ops
import spyre_ops.emulator as emulator
from spyre_ops.spyre import formula, weights

HIDDEN = 128


@pytest.mark.parametrize(("x_dtype", "w_dtype"), [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                                  (torch.float32, torch.float16)])
def test_mixed_weight_is_converted_once_per_version(spyre_device, x_dtype, w_dtype):
    weights.clear()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, HIDDEN, generator=g).to(x_dtype)
    w = (torch.rand(HIDDEN, generator=g) + 0.5).to(w_dtype)
    xd, wd = x.to(spyre_device), w.to(spyre_device)
    y = spyre_ops.rms_norm(xd, HIDDEN, wd, 1e-6)
    assert weights.cached() == 1
    assert_close(y, rms_norm_ref(x, [HIDDEN], w, 1e-6), x_dtype, torch.float16)
    with emulator.transfers() as t:  # the same weight and version: no conversion, no copy
        spyre_ops.rms_norm(xd, HIDDEN, wd, 1e-6)
    assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks
    wd.mul_(2.0)  # a new version is converted again
    y2 = spyre_ops.rms_norm(xd, HIDDEN, wd, 1e-6)
    assert_close(y2, rms_norm_ref(x, [HIDDEN], w * 2.0, 1e-6), x_dtype, torch.float16)
    assert weights.cached() == 1


def test_conversion_is_dropped_with_the_weight(spyre_device):
    weights.clear()
    x = torch.randn(2, HIDDEN, dtype=torch.float16).to(spyre_device)
    w = torch.ones(HIDDEN, dtype=torch.float32).to(spyre_device)
    spyre_ops.fused_add_rms_norm(x, x.clone(), HIDDEN, w, 1e-6)
    assert weights.cached() == 1
    del w
    assert weights.cached() == 0


def _graph_ops(dtype: torch.dtype, eps: float) -> list[str]:
    x = torch.randn(8, 256, dtype=dtype)
    w = torch.rand(256, dtype=dtype)
    gm = torch.fx.experimental.proxy_tensor.make_fx(
        lambda x, w: formula.rms_norm_rows(x, w, eps, torch.float16), tracing_mode="fake")(x, w)
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def test_graph_reductions_and_full_size_ops():
    # The device cost is HBM traffic of full-size tensors: the formula keeps to x / m, u * u,
    # u * g and the weight multiply at full size (no |x|: max|x| comes from amax and amin of x),
    # and three reductions.
    ops = _graph_ops(torch.float16, 1e-6)
    reductions = [op for op in ops if op.startswith(("aten.amax", "aten.amin", "aten.mean", "aten.sum"))]
    assert reductions == ["aten.amax.default", "aten.amin.default", "aten.mean.dim"]
    assert not any(op.startswith(("aten.where", "aten.clamp", "aten.linalg")) for op in ops)
    x = torch.randn(8, 256, dtype=torch.float16)
    gm = torch.fx.experimental.proxy_tensor.make_fx(
        lambda x, w: formula.rms_norm_rows(x, w, 1e-6, torch.float16), tracing_mode="fake")(x, torch.rand(256).half())
    full = [n for n in gm.graph.nodes if n.op == "call_function"
            and tuple(n.meta["val"].shape) == (8, 256)]
    assert [str(n.target) for n in full] == ["aten.div.Tensor", "aten.mul.Tensor", "aten.mul.Tensor",
                                              "aten.mul.Tensor"]


def test_decomposition_copies_a_strided_view_it_converts(spyre_device):
    # torch-spyre cannot lay out the fp32 conversion of a q-norm view of fp16 qkv; the
    # decomposition hands the formula a dense copy then (and only then), same result.
    from spyre_ops.spyre import torch_spyre

    qkv = torch.randn(8, 768, dtype=torch.float16)
    q = qkv[..., :512].view(8, 4, 128)
    assert torch_spyre._laid_out(q, torch.float16) is q
    dense = torch_spyre._laid_out(q, torch.float32)
    assert dense.is_contiguous() and torch.equal(dense, q)
    assert torch_spyre._laid_out(q.contiguous().float(), torch.float32).dtype == torch.float32
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        y = torch_spyre.decompose_rms_norm(qkv.to(spyre_device)[..., :512].view(8, 4, 128), [128], None, 1e-6)
    assert_close(y, rms_norm_ref(held(qkv.to(spyre_device))[..., :512].view(8, 4, 128), [128], None, 1e-6),
                 torch.float16, torch.float32)
