"""The aten ops torch-spyre runs on the Spyre device: the one place this list lives.

Source: torch-spyre's main branch, mid-2026 (``amax`` from its 2026-08 eager list; ``amin``, which
its compiler lowers in graphs to the device's ``min`` reduction, as it lowers ``amax`` to ``max``),
as summarized in the project's FACTS.md ("What torch-spyre runs on the device"): the eager aten ops it
implements for spyre tensors (each compiled once through its Inductor backend),
its tensor-creation and storage ops, and the view ops. Any other op on a spyre
tensor falls back to the CPU in torch-spyre (a hidden device->host->device round
trip) or fails, so the emulator's instrument counts it as a fallback.

Names are operator names without overload ("aten::add" covers add.Tensor and
add.Scalar). In-place variants ("aten::add_") are listed only where torch-spyre
lists them; the Spyre kernels avoid the others.
"""

from __future__ import annotations

_COMPUTE = """
mm bmm addmm add sub mul div exp log rsqrt sqrt pow tanh sigmoid relu neg abs reciprocal floor
mean sum amax amin _softmax eq ne le lt ge gt maximum minimum where clamp cat stack constant_pad_nd
linalg_vector_norm silu mish bitwise_not logical_not fill_ normal_ uniform_ random_ zero_
_local_scalar_dense _copy_from
"""
_MEMORY = "empty empty_strided set_ resize_"
_VIEWS = "view _unsafe_view _reshape_alias alias as_strided unfold"

#: Qualified names ("aten::mul") of the ops torch-spyre runs on the device.
ON_DEVICE: frozenset[str] = frozenset(
    "aten::" + name for name in (_COMPUTE + " " + _MEMORY + " " + _VIEWS).split()
)


def runs_on_device(op: str) -> bool:
    """Whether torch-spyre runs the operator ``op`` (e.g. ``"aten::mul"``) on the device."""
    return op in ON_DEVICE
