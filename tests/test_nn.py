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
    norm = RMSNorm(16)
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
