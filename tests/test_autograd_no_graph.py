"""Calls that record no graph: the autograd kernels skip the autograd Function for them
(grad mode off, or no input requiring grad), and must give exactly what the Function
would have, attach no graph, and still refuse forward-mode tangents."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import spyre_ops


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, generator=g)
    r = torch.randn(3, 16, generator=g)
    w = torch.randn(16, generator=g)
    return x, r, w


@pytest.mark.parametrize("mode", ["grad", "no_grad"])
def test_rms_norm_without_graph_matches_the_recorded_call(mode):
    x, _, w = _inputs()
    recorded = spyre_ops.rms_norm(x.clone().requires_grad_(), 16, w, 1e-6)
    assert recorded.grad_fn is not None
    xi = x.clone().requires_grad_() if mode == "no_grad" else x
    with torch.no_grad() if mode == "no_grad" else torch.enable_grad():
        y = spyre_ops.rms_norm(xi, 16, w, 1e-6)
    assert y.grad_fn is None and not y.requires_grad
    torch.testing.assert_close(y, recorded.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["grad", "no_grad"])
def test_fused_without_graph_matches_the_recorded_call(mode):
    x, r, w = _inputs()
    out_rec, sum_rec = spyre_ops.fused_add_rms_norm(x.clone().requires_grad_(), r, 16, w, 1e-6)
    assert out_rec.grad_fn is not None
    xi = x.clone().requires_grad_() if mode == "no_grad" else x
    with torch.no_grad() if mode == "no_grad" else torch.enable_grad():
        out, summed = spyre_ops.fused_add_rms_norm(xi, r, 16, w, 1e-6)
    assert out.grad_fn is None and summed.grad_fn is None
    torch.testing.assert_close(out, out_rec.detach(), atol=0, rtol=0)
    torch.testing.assert_close(summed, sum_rec.detach(), atol=0, rtol=0)


def test_only_the_weight_requiring_grad_still_records():
    x, _, w = _inputs()
    w = w.clone().requires_grad_()
    y = spyre_ops.rms_norm(x, 16, w, 1e-6)
    assert y.grad_fn is not None
    y.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


@pytest.mark.parametrize("with_grad_mode", [True, False])
def test_forward_mode_tangent_is_propagated_not_dropped(with_grad_mode):
    # With or without grad mode, a tangent goes through (the composite path), as F.rms_norm's does.
    x, _, w = _inputs()
    t = torch.ones_like(x)
    with torch.set_grad_enabled(with_grad_mode), fwAD.dual_level():
        got = fwAD.unpack_dual(spyre_ops.rms_norm(fwAD.make_dual(x, t), 16, w, 1e-6)).tangent
        want = fwAD.unpack_dual(torch.nn.functional.rms_norm(fwAD.make_dual(x, t), [16], w, 1e-6)).tangent
    assert got is not None
    torch.testing.assert_close(got, want)
