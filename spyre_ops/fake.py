"""Fake (meta) kernels of the spyre ops, for FakeTensor tracing and torch.compile.

Each validates its arguments exactly as the real kernels do (``_checks``) and
returns empty tensors of the right shape, dtype, device and (contiguous) strides.
None of them reads tensor data. The out= and in-place ones also refuse the
overlaps the C++ kernels refuse: on fake tensors they see the real inputs' aliasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _checks
from ._library import lib


@torch.library.register_fake("spyre::rms_norm", lib=lib)
def rms_norm(
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    _checks.check_call("spyre::rms_norm", x, normalized_shape, weight, eps)
    return x.new_empty(x.shape)


@torch.library.register_fake("spyre::rms_norm.out", lib=lib)
def rms_norm_out(
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    out: torch.Tensor,
) -> torch.Tensor:
    _checks.check_call("spyre::rms_norm.out", x, normalized_shape, weight, eps, out=out)
    return out


@torch.library.register_fake("spyre::fused_add_rms_norm", lib=lib)
def fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.check_call("spyre::fused_add_rms_norm", x, normalized_shape, weight, eps, residual=residual)
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.register_fake("spyre::fused_add_rms_norm_", lib=lib)
def fused_add_rms_norm_(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> None:
    _checks.check_call("spyre::fused_add_rms_norm_", x, normalized_shape, weight, eps, residual=residual,
                       inplace=True)


@torch.library.register_fake("spyre::rms_norm_backward", lib=lib)
def rms_norm_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    op = "spyre::rms_norm_backward"
    _checks.check_rms_norm_args(op, x, normalized_shape, weight, eps)
    torch._check(
        grad_out.device == x.device and grad_out.shape == x.shape,
        lambda: f"{op}: grad_out must have x's shape and device",
    )
    grad_weight = weight.new_empty(weight.shape) if weight is not None else x.new_empty((0,))
    return x.new_empty(x.shape), grad_weight
