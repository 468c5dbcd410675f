"""Strided x in compiled graphs: what the decomposition hands torch-spyre.

torch-spyre lays a tensor out in sticks along its innermost dimension. A transposed x (shape
(8, 128), strides (1, 8)) has its rows across sticks, and the formula's row reductions on it fail
in torch-spyre's layout pass ("no mechanism to resolve stick incompatibility", checked on its
compiler front end); a dense copy inside the graph it restickifies (its own ``F.rms_norm`` gets
the same). So the decomposition copies such an x first, and reads rows that are contiguous in the
last dimension (the q/k views of a fused qkv) where they are.
"""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import SEN169_NORM_RTOL, sen169_relative_error
from torch.fx.experimental.proxy_tensor import make_fx

import spyre_ops
from spyre_ops.spyre import torch_spyre


def _graph(fn, *args):
    return make_fx(fn, decomposition_table=torch_spyre.decomposition_table(), tracing_mode="fake")(*args)


def _reductions(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in
            (torch.ops.aten.amax.default, torch.ops.aten.amin.default, torch.ops.aten.mean.dim)]


def _transposed(device, rows=8, hidden=128, dtype=torch.float16):
    g = torch.Generator().manual_seed(11)
    base = torch.randn(hidden, rows, generator=g).to(dtype)
    return base.t(), base.to(device).t()


@pytest.mark.parametrize("compute", [torch.float16, torch.float32])
def test_transposed_x_is_copied_dense_before_the_formula(spyre_device, compute):
    _, x = _transposed(spyre_device)
    assert x.stride() == (1, 8)
    w = torch.rand(128, dtype=torch.float16).to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        gm = _graph(lambda x, w: torch.ops.spyre.rms_norm(x, [128], w, 1e-6), x, w)
    reductions = _reductions(gm)
    assert reductions
    # Every reduction reads a dense tensor (the copy, or what is computed from it), none x itself.
    for node in reductions:
        assert node.args[0].meta["val"].is_contiguous(), node.format_node()
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    users = {u.target for u in placeholder.users}
    assert users == {torch.ops.aten.clone.default}, users


def test_fused_op_copies_a_transposed_x_and_residual(spyre_device):
    _, x = _transposed(spyre_device)
    _, r = _transposed(spyre_device)
    gm = _graph(lambda x, r: torch.ops.spyre.fused_add_rms_norm(x, r, [128], None, 1e-6), x, r)
    for placeholder in (n for n in gm.graph.nodes if n.op == "placeholder"):
        assert {u.target for u in placeholder.users} == {torch.ops.aten.clone.default}


@pytest.mark.parametrize("compute", [torch.float16, torch.float32])
def test_transposed_x_values(spyre_device, compute):
    _, x = _transposed(spyre_device, rows=5, hidden=192)
    w = (torch.rand(192, dtype=torch.float64) + 0.5).to(torch.float16)
    wd = w.to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        twin = torch_spyre.decompose_rms_norm(x, [192], wd, 1e-6)
        kernel = torch.ops.spyre.rms_norm(x, [192], wd, 1e-6)
    assert twin.is_contiguous()
    assert torch.equal(twin.cpu(), kernel.cpu())  # the decomposition and the eager kernel agree bit for bit
    # Against float64 on the values the device holds (SEN169), at the SEN169 tolerance.
    held_x, held_w = x.to(torch.float32).cpu(), wd.to(torch.float32).cpu()
    assert sen169_relative_error(twin, rms_norm_ref(held_x, [192], held_w, 1e-6)) <= SEN169_NORM_RTOL


def test_row_contiguous_views_are_read_in_place(spyre_device):
    # q/k views of a fused qkv (rows contiguous in the last dim) under the fp16 policy: no copy.
    qkv = torch.randn(8, 6144, dtype=torch.float16).to(spyre_device)
    w = torch.rand(128, dtype=torch.float16).to(spyre_device)
    for view in (qkv[..., :4096].view(8, 32, 128), qkv[..., 4096:5120].view(8, 8, 128)):
        gm = _graph(lambda x, w: torch.ops.spyre.rms_norm(x, [128], w, 1e-6), view, w)
        placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
        assert torch.ops.aten.clone.default not in {u.target for u in placeholder.users}
        assert any(r.args[0] is placeholder for r in _reductions(gm))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp32_policy_takes_the_row_scale_from_16_bit_x(spyre_device, dtype):
    # Under the fp32 policy a 16-bit x is converted to float32; its row max is taken from x itself
    # and converted once, so both operands of the division are converted tensors (torch-spyre
    # rejects a converted full-size tensor with an unconverted per-row one computed by a binary op:
    # "Multi-arg pointwise with mixed EA" at 32 rows; the q view of a fused qkv, (8, 32, 128)).
    qkv = (torch.randn(8, 768, generator=torch.Generator().manual_seed(2)) * 4).to(dtype).to(spyre_device)
    q = qkv[..., :512].view(8, 4, 128)
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        gm = _graph(lambda x: torch.ops.spyre.rms_norm(x, [128], None, 1e-6), q)
        y = torch_spyre.decompose_rms_norm(q, [128], None, 1e-6)
    for node in _reductions(gm):
        if node.target in (torch.ops.aten.amax.default, torch.ops.aten.amin.default):
            assert node.args[0].meta["val"].dtype == dtype, node.format_node()
    # The per-row max (of the 16-bit x) is converted to float32 once, before it scales x.
    conversions = (torch.ops.prims.convert_element_type.default, torch.ops.aten._to_copy.default)
    maximum = next(n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.maximum.default)
    assert maximum.meta["val"].dtype == dtype, maximum.format_node()
    assert any(u.target in conversions and u.meta["val"].dtype == torch.float32
               for n in [maximum, *maximum.users] for u in n.users), gm.code
    held = q.to(torch.float32).cpu()
    assert sen169_relative_error(y, rms_norm_ref(held, [128], None, 1e-6)) <= SEN169_NORM_RTOL
