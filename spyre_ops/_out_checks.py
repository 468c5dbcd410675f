"""``spyre::_check_rms_norm_out`` and ``spyre::_check_fused_add_rms_norm_`` (and each op
family's, e.g. ``spyre_ops::_check_gemma_rms_norm_out``): the argument checks of
``rms_norm.out`` and of the in-place op, as ops of their own, that run in every call
of a compiled graph.

Dynamo refuses ``out=`` into a non-contiguous tensor, so under torch.compile
:func:`spyre_ops.rms_norm` writes such an ``out`` through a contiguous buffer.
The in-place op has the same gap in another form: functionalized (aot_eager, or
any graph in which it is not written back in place), ``fused_add_rms_norm_`` runs
on copies of x and residual, which never overlap. In both cases an overlap that
only a later call's inputs have (Dynamo's guards do not look at overlaps) would
not be refused. So the wrappers call the check op first, with the real tensors:
its fake kernel runs the checks at trace time on tensors that keep the real
inputs' aliasing; its kernel runs them again, in the compiled graph, on the real
tensors of every call.

The kernels are C++ (``csrc/check_ops.cpp``, the CPU kernels' own checks, for any
device): a compiled graph pays one dispatcher call per checked op, not a Python call.
"""

from __future__ import annotations

import torch
from torch._library.effects import EffectType

from . import _C, _checks
from ._library import LIBRARIES
from ._variants import VARIANTS, Variant

#: The check ops, by the op they check: (name suffix, schema arguments).
_CHECKED = {
    "rms_norm.out": ("rms_norm_out", "Tensor x, SymInt[] normalized_shape, Tensor? weight, float eps, Tensor out"),
    "fused_add_rms_norm_": (
        "fused_add_rms_norm_", "Tensor x, Tensor residual, SymInt[] normalized_shape, Tensor? weight, float eps"),
}


def _name(variant: Variant, op: str = "rms_norm.out") -> str:
    return f"_check_{variant.prefix}{_CHECKED[op][0]}"


def check_op(variant: Variant, op: str = "rms_norm.out") -> torch._ops.OpOverloadPacket:
    """``variant``'s check op of ``op`` (``"rms_norm.out"`` or ``"fused_add_rms_norm_"``):
    ``torch.ops.spyre._check_rms_norm_out`` for the plain family's out=."""
    return getattr(getattr(torch.ops, variant.namespace), _name(variant, op))


def _define(variant: Variant) -> None:
    lib = LIBRARIES[variant.namespace]
    out_op, inplace_op = variant.qualname("rms_norm.out"), variant.qualname("fused_add_rms_norm_")

    def check_out(x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None, eps: float,
                  out: torch.Tensor) -> None:
        """Raises what ``rms_norm.out(x, normalized_shape, weight, eps, out=out)`` would raise."""
        _checks.check_call(out_op, x, normalized_shape, weight, eps, out=out)

    def check_inplace(x: torch.Tensor, residual: torch.Tensor, normalized_shape: list[int],
                      weight: torch.Tensor | None, eps: float) -> None:
        """Raises what ``fused_add_rms_norm_(x, residual, normalized_shape, weight, eps)`` would raise."""
        _checks.check_call(inplace_op, x, normalized_shape, weight, eps, residual=residual, inplace=True)

    for op, fake in (("rms_norm.out", check_out), ("fused_add_rms_norm_", check_inplace)):
        name = _name(variant, op)
        qualname = f"{variant.namespace}::{name}"
        lib.define(f"{name}({_CHECKED[op][1]}) -> ()")
        torch.library.register_fake(qualname, fake, lib=lib)
        # Effectful, so that graph passes keep the call (it returns nothing) and it
        # runs, on the real tensors, in every call of the compiled graph.
        torch.library._register_effectful_op(qualname, EffectType.ORDERED)


for _variant in VARIANTS:
    _define(_variant)
_C.register_check_kernels()
