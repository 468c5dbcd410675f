"""The Spyre RMSNorm formula in torch ops: the Python twin of csrc/spyre/rms_norm.cpp.

It serves as the decomposition torch-spyre's Inductor backend lowers when the
ops appear in a compiled graph (:mod:`spyre_ops.spyre.torch_spyre`). It runs the
same ops in the same order as the C++ kernel, so the two give bitwise-equal
results (tests/spyre/test_spyre_formula.py checks it on the emulated device).
See the C++ file for why each step is there.
"""

from __future__ import annotations

import math

import torch

#: fp16's smallest normal number: the floor of the row scale.
MIN_SCALE = 6.103515625e-05


def compute_dtype_for(x_dtype: torch.dtype, policy: torch.dtype) -> torch.dtype:
    """The dtype the formula computes in for input x_dtype under the policy (float16/float32)."""
    return torch.float64 if x_dtype == torch.float64 else policy


def rms_norm_last_dim(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype
) -> torch.Tensor:
    """RMSNorm over the last dim of x, scaled by each row's max-abs; result in x's dtype, contiguous."""
    in_dtype = x.dtype
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    c = compute_dtype_for(in_dtype, policy)
    scale_in_input_dtype = c == torch.float16 and in_dtype in (torch.bfloat16, torch.float32)
    xin = x if scale_in_input_dtype else x.to(c)
    m = torch.linalg.vector_norm(xin, math.inf, dim=-1, keepdim=True)
    s = torch.clamp(m, MIN_SCALE)
    xs = torch.div(xin, s).to(c)
    eps_term = torch.div(torch.mul(torch.reciprocal(s), eps), s).to(c)
    mean_sq = torch.mean(torch.mul(xs, xs), dim=-1, keepdim=True)
    y = torch.mul(xs, torch.rsqrt(torch.add(mean_sq, eps_term)))
    if weight is not None:
        y = torch.mul(y, weight.to(c))
    return y.to(in_dtype).contiguous()


def fused_add_rms_norm_last_dim(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), the sum rounded to x's dtype first."""
    summed = torch.add(x, residual).contiguous()
    return rms_norm_last_dim(summed, weight, eps, policy), summed
