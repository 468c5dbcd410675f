"""spyre_ops.nn.RMSNorm as a drop-in for torch.nn.RMSNorm."""

from __future__ import annotations

import pytest
import torch
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref

from spyre_ops.nn import RMSNorm


@pytest.mark.parametrize("affine", [True, False])
def test_state_dict_is_interchangeable_with_torch(affine):
    ours = RMSNorm(32, eps=1e-6, elementwise_affine=affine)
    theirs = torch.nn.RMSNorm(32, eps=1e-6, elementwise_affine=affine)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 32)
    torch.testing.assert_close(ours(x), theirs(x))
    assert_close_to_ref(ours(x), rms_norm_ref(x, [32], ours.weight, 1e-6))


def test_multi_dim_shape_and_dtype():
    norm = RMSNorm((4, 8), eps=1e-5, dtype=torch.bfloat16)
    assert norm.weight.shape == (4, 8) and norm.weight.dtype == torch.bfloat16
    x = torch.randn(3, 4, 8, dtype=torch.bfloat16)
    assert_close_to_ref(norm(x), rms_norm_ref(x, [4, 8], norm.weight, 1e-5))


def test_residual_form_uses_the_fused_op():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    out, summed = norm(x, r)
    ref_out, ref_sum = fused_add_rms_norm_ref(x, r, [16], norm.weight, 1e-6)
    assert torch.equal(summed, ref_sum)
    assert_close_to_ref(out, ref_out)


def test_trains():
    norm = RMSNorm(8)
    x = torch.randn(4, 8)
    norm(x).pow(2).sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.shape == (8,)


def test_eps_and_repr():
    norm = RMSNorm(8, eps=1e-5)
    norm.eps = 1e-3
    assert norm.eps == 1e-3 and isinstance(norm.eps, float)
    assert repr(norm) == "RMSNorm((8,), eps=0.001, elementwise_affine=True)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_default_eps_is_torchs(dtype):
    """RMSNorm(n) means what torch.nn.RMSNorm(n) means: eps=None, the machine epsilon of
    the compute dtype (float32's for 16-bit and float32 inputs, float64's for float64)."""
    ours, theirs = RMSNorm(16, dtype=dtype), torch.nn.RMSNorm(16, dtype=dtype)
    assert ours.eps is None and theirs.eps is None
    assert repr(ours) == "RMSNorm((16,), eps=None, elementwise_affine=True)"
    # rows whose mean square (1e-8) is below a 1e-6 eps: the eps decides the result
    x = (torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 1e-4).to(dtype)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    ref = rms_norm_ref(x, [16], ours.weight, torch.finfo(compute).eps)
    assert_close_to_ref(ours(x), ref)
    assert_close_to_ref(theirs(x), ref)


def test_symbolic_trace_runs_like_torchs():
    """torch.fx.symbolic_trace(RMSNorm(n)) traces and runs as torch.nn.RMSNorm's does; the
    traced graph keeps the optional residual as an optional input."""
    x, r = torch.randn(3, 64), torch.randn(3, 64)
    for eps in (None, 1e-5):
        norm = RMSNorm(64, eps=eps)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        theirs = torch.nn.RMSNorm(64, eps=eps)
        theirs.load_state_dict(norm.state_dict())
        traced = torch.fx.symbolic_trace(norm)
        assert torch.equal(traced(x), norm(x))
        torch.testing.assert_close(traced(x), torch.fx.symbolic_trace(theirs)(x))
        assert all(torch.equal(a, b) for a, b in zip(traced(x, r), norm(x, r), strict=True))
        assert torch.equal(traced(x.double()), norm.double()(x.double()))
        norm.float()


def test_symbolic_trace_inside_a_model_records_the_ops():
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = RMSNorm(16)

        def forward(self, x, r):
            out, summed = self.norm(x, r)
            return self.norm(out) + summed

    block = Block()
    traced = torch.fx.symbolic_trace(block)
    targets = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert torch.ops.spyre.fused_add_rms_norm in targets and torch.ops.spyre.rms_norm in targets
    x, r = torch.randn(2, 16), torch.randn(2, 16)
    assert torch.equal(traced(x, r), block(x, r))
    assert torch.equal(traced(x.double(), r.double()), block.double()(x.double(), r.double()))
