"""Fake (meta) kernels of the spyre ops, for FakeTensor tracing and torch.compile.

Each validates its arguments exactly as the real kernels do (``_checks``) and
returns empty tensors of the right shape, dtype, device and (contiguous) strides.
None of them reads tensor data. The out= and in-place ones also refuse the
overlaps the C++ kernels refuse: on fake tensors they see the real inputs' aliasing.
Every op family (:mod:`spyre_ops._variants`) gets the same five, under its own names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _checks
from ._library import LIBRARIES
from ._variants import VARIANTS, Variant


def register(variant: Variant) -> None:
    """Registers the fake kernels of ``variant``'s ops."""
    lib = LIBRARIES[variant.namespace]
    name = variant.qualname

    def rms_norm(
        x: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None = None,
        eps: float = variant.eps,
    ) -> torch.Tensor:
        _checks.check_call(name("rms_norm"), x, normalized_shape, weight, eps)
        return x.new_empty(x.shape)

    def rms_norm_out(
        x: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None = None,
        eps: float = variant.eps,
        *,
        out: torch.Tensor,
    ) -> torch.Tensor:
        _checks.check_call(name("rms_norm.out"), x, normalized_shape, weight, eps, out=out)
        return out

    def fused_add_rms_norm(
        x: torch.Tensor,
        residual: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None = None,
        eps: float = variant.eps,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _checks.check_call(name("fused_add_rms_norm"), x, normalized_shape, weight, eps, residual=residual)
        return x.new_empty(x.shape), x.new_empty(x.shape)

    def fused_add_rms_norm_(
        x: torch.Tensor,
        residual: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None = None,
        eps: float = variant.eps,
    ) -> None:
        _checks.check_call(name("fused_add_rms_norm_"), x, normalized_shape, weight, eps, residual=residual,
                           inplace=True)

    def rms_norm_backward(
        grad_out: torch.Tensor,
        x: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        op = name("rms_norm_backward")
        _checks.check_rms_norm_args(op, x, normalized_shape, weight, eps)
        torch._check(
            grad_out.device == x.device and grad_out.shape == x.shape,
            lambda: f"{op}: grad_out must have x's shape and device",
        )
        grad_weight = weight.new_empty(weight.shape) if weight is not None else x.new_empty((0,))
        return x.new_empty(x.shape), grad_weight

    kernels = {
        "rms_norm": rms_norm,
        "rms_norm.out": rms_norm_out,
        "fused_add_rms_norm": fused_add_rms_norm,
        "fused_add_rms_norm_": fused_add_rms_norm_,
        "rms_norm_backward": rms_norm_backward,
    }
    for op, kernel in kernels.items():
        torch.library.register_fake(name(op), kernel, lib=lib)


for _variant in VARIANTS:
    register(_variant)
