"""Autograd of the functional spyre ops.

The backward is itself a library op, ``spyre::rms_norm_backward`` (C++ CPU
kernel, fake kernel), so a compiled training graph holds it as one node too.
``fused_add_rms_norm_`` mutates its inputs and has no autograd.
"""

from __future__ import annotations

from typing import Any

import torch

from ._library import lib


def _rms_norm_setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, normalized_shape, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.normalized_shape = normalized_shape
    ctx.eps = eps


def _rms_norm_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    grad_x, grad_weight = torch.ops.spyre.rms_norm_backward(
        grad, x, ctx.normalized_shape, weight, ctx.eps
    )
    return grad_x, None, grad_weight if weight is not None else None, None


def _fused_setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    _x, _residual, normalized_shape, weight, eps = inputs
    _out, summed = output
    # The forward normalized the rounded sum it returned, so that is what we save.
    ctx.save_for_backward(summed, weight)
    ctx.normalized_shape = normalized_shape
    ctx.eps = eps


def _fused_backward(ctx: Any, grad_out: torch.Tensor, grad_sum: torch.Tensor) -> tuple:
    summed, weight = ctx.saved_tensors
    grad_x, grad_weight = torch.ops.spyre.rms_norm_backward(
        grad_out, summed, ctx.normalized_shape, weight, ctx.eps
    )
    grad_in = grad_x + grad_sum
    return grad_in, grad_in, None, grad_weight if weight is not None else None, None


torch.library.register_autograd(
    "spyre::rms_norm", _rms_norm_backward, setup_context=_rms_norm_setup_context, lib=lib
)
torch.library.register_autograd(
    "spyre::fused_add_rms_norm", _fused_backward, setup_context=_fused_setup_context, lib=lib
)
