"""The op families this package provides: one row each, mirrored by ``csrc/variants.h``.

A family is the same five ops (``rms_norm``, ``rms_norm.out``, ``fused_add_rms_norm``,
``fused_add_rms_norm_`` and the backward) with one formula,
``y = x / sqrt(mean(x**2) + eps) * (weight + weight_offset)``, the offset added to the
weight in the accumulator dtype inside the kernels (no weight: no scale). Every layer
that lists the ops (schemas, fake kernels, nested tensors, Spyre kernels and
decompositions, the eager entry points) takes them from this table.

* :data:`RMS_NORM`: ``spyre::rms_norm`` & co., the schema torch-spyre gives its own
  ``spyre::rms_norm``;
* :data:`GEMMA`: ``spyre_ops::gemma_rms_norm`` & co., Gemma's ``(1 + weight)`` scale,
  in a namespace of its own: torch-spyre owns ``spyre::`` and keeps adding ops there,
  and a second definition of an op fails at load, so only a namespace torch-spyre
  never uses cannot collide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The ops of a family, by their name in :data:`RMS_NORM` (``name.overload``).
OPS = ("rms_norm", "rms_norm.out", "fused_add_rms_norm", "fused_add_rms_norm_", "rms_norm_backward")


@dataclass(frozen=True)
class Variant:
    """One op family: its namespace, op-name prefix, weight offset and default eps."""

    namespace: str
    prefix: str
    weight_offset: float
    eps: float

    def name(self, op: str) -> str:
        """The family's name of ``op`` (an entry of :data:`OPS`): ``"gemma_rms_norm.out"``."""
        return self.prefix + op

    def qualname(self, op: str) -> str:
        """The qualified name, as messages spell it: ``"spyre_ops::gemma_rms_norm.out"``."""
        return f"{self.namespace}::{self.name(op)}"

    def packet(self, op: str) -> torch._ops.OpOverloadPacket:
        """``torch.ops.<namespace>.<prefix><op>`` (``op`` without an overload)."""
        return getattr(getattr(torch.ops, self.namespace), self.name(op))


RMS_NORM = Variant(namespace="spyre", prefix="", weight_offset=0.0, eps=1e-5)
GEMMA = Variant(namespace="spyre_ops", prefix="gemma_", weight_offset=1.0, eps=1e-6)
VARIANTS: tuple[Variant, ...] = (RMS_NORM, GEMMA)
