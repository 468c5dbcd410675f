"""``spyre::_check_rms_norm_out``: the argument checks of ``rms_norm.out``, as
an op of its own, for the one call torch.compile cannot trace as ``out=``.

Dynamo refuses ``out=`` into a non-contiguous tensor, so under torch.compile
:func:`spyre_ops.rms_norm` writes such an ``out`` through a contiguous buffer.
This op, called first with the real ``out``, makes the compiled call refuse
exactly what eager mode refuses (shape, dtype, device, overlaps with x or
weight): its fake kernel runs the checks at trace time on tensors that keep
the real inputs' aliasing; its kernel runs them again on real tensors.
"""

from __future__ import annotations

import torch
from torch._library.effects import EffectType

from . import _checks

_OP = "spyre::rms_norm.out"


def _check(x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None, eps: float,
           out: torch.Tensor) -> None:
    _checks.check_call(_OP, x, normalized_shape, weight, eps, out=out)


@torch.library.custom_op("spyre::_check_rms_norm_out", mutates_args=())
def check_rms_norm_out(
    x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None, eps: float, out: torch.Tensor
) -> None:
    """Raises what ``rms_norm.out(x, normalized_shape, weight, eps, out=out)`` would raise."""
    _check(x, normalized_shape, weight, eps, out)


# Effectful, so that graph passes keep the call (it returns nothing) and it runs,
# on the real tensors, in every call of the compiled graph: an overlap of out
# with x or weight in a later call's inputs (which Dynamo's guards do not look
# at) is then refused as eager mode refuses it.
torch.library._register_effectful_op("spyre::_check_rms_norm_out", EffectType.ORDERED)


@check_rms_norm_out.register_fake
def _(x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None, eps: float,
      out: torch.Tensor) -> None:
    _check(x, normalized_shape, weight, eps, out)
