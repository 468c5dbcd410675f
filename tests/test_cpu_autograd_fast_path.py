"""The C++ AutogradCPU fast path in front of the Python autograd (csrc/cpu/autograd_fast_path.cpp).

Calls that need no gradient skip the Python autograd kernel; calls that do need
one must still reach it and produce correct gradients.
"""

from __future__ import annotations

import pytest
import torch

import spyre_ops
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm"])
def test_fast_path_is_registered_for_cpu(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"spyre::{op}", "AutogradCPU")


def test_no_grad_needed_gives_plain_tensors():
    x = torch.randn(4, 32)
    w = torch.randn(32)
    y = spyre_ops.rms_norm(x, 32, w)
    assert y.grad_fn is None and not y.requires_grad
    assert_close_to_ref(y, rms_norm_ref(x, [32], w))
    out, summed = spyre_ops.fused_add_rms_norm(x, x.flip(0), 32, w)
    assert out.grad_fn is None and summed.grad_fn is None
    ref_out, ref_sum = fused_add_rms_norm_ref(x, x.flip(0), [32], w)
    assert_close_to_ref(out, ref_out)
    assert_close_to_ref(summed, ref_sum)


@pytest.mark.parametrize(("x_grad", "w_grad"), [(True, True), (True, False), (False, True)])
def test_gradients_still_flow(x_grad, w_grad):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 16, generator=g, dtype=torch.float64).requires_grad_(x_grad)
    w = (1 + 0.2 * torch.randn(16, generator=g, dtype=torch.float64)).requires_grad_(w_grad)
    assert torch.autograd.gradcheck(lambda a, b: spyre_ops.rms_norm(a, 16, b), (x, w))
    r = torch.randn(3, 2, 16, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: spyre_ops.fused_add_rms_norm(a, b, 16, c), (x, r, w))


def test_requires_grad_under_no_grad_records_nothing():
    x = torch.randn(2, 8, requires_grad=True)
    with torch.no_grad():
        y = spyre_ops.rms_norm(x, 8)
    assert y.grad_fn is None and not y.requires_grad
