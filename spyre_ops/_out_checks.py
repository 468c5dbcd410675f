"""``spyre::_check_rms_norm_out`` (and each op family's, e.g.
``spyre_ops::_check_gemma_rms_norm_out``): the argument checks of ``rms_norm.out``,
as an op of its own, for the one call torch.compile cannot trace as ``out=``.

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
from ._variants import VARIANTS, Variant


def _name(variant: Variant) -> str:
    return f"_check_{variant.prefix}rms_norm_out"


def check_op(variant: Variant) -> torch._ops.OpOverloadPacket:
    """``variant``'s check op: ``torch.ops.spyre._check_rms_norm_out`` for the plain family."""
    return getattr(getattr(torch.ops, variant.namespace), _name(variant))


def _define(variant: Variant) -> None:
    op = variant.qualname("rms_norm.out")
    qualname = f"{variant.namespace}::{_name(variant)}"

    def check(x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None, eps: float,
              out: torch.Tensor) -> None:
        """Raises what ``rms_norm.out(x, normalized_shape, weight, eps, out=out)`` would raise."""
        _checks.check_call(op, x, normalized_shape, weight, eps, out=out)

    torch.library.custom_op(qualname, check, mutates_args=()).register_fake(check)
    # Effectful, so that graph passes keep the call (it returns nothing) and it runs,
    # on the real tensors, in every call of the compiled graph: an overlap of out
    # with x or weight in a later call's inputs (which Dynamo's guards do not look
    # at) is then refused as eager mode refuses it.
    torch.library._register_effectful_op(qualname, EffectType.ORDERED)


for _variant in VARIANTS:
    _define(_variant)
