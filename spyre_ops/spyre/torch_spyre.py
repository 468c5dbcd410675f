"""Integration with torch-spyre, used only when torch-spyre is loaded (never in this repo's CI).

torch-spyre cannot be installed outside IBM's stack, so nothing here has run on
Spyre hardware or beside the real torch-spyre; see README, "Status of the Spyre
path".

What it does, the way torch-spyre treats its own ops:

* Eager calls on spyre tensors run the C++ Spyre kernel (registered by
  ``import spyre_ops`` whatever the backend); each of its steps is an aten op
  that torch-spyre compiles once per shape and runs on the device.
* In a compiled graph, torch-spyre's Inductor backend needs to lower the op:
  :func:`install` registers a decomposition of the three spyre ops into the
  same formula (:mod:`spyre_ops.spyre.formula`) in Inductor's decomposition
  table, as torch-spyre does for ``spyre::layer_norm`` (the in-place op: the
  functional formula and two copies). It applies only to
  spyre tensors; for any other device the op stays a single node (the
  decomposition returns ``NotImplemented``), so CPU graphs keep the C++ CPU kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from . import formula

DEVICE_TYPE = "spyre"
_installed = False


def loaded() -> bool:
    """Whether torch-spyre is loaded in this process (it autoloads with ``import torch``)."""
    return "torch_spyre" in sys.modules


def _policy() -> torch.dtype:
    from . import compute_dtype

    return compute_dtype()


def _applies(x: torch.Tensor, normalized_shape: Sequence[int]) -> bool:
    """Whether a decomposition takes the call: spyre tensors, last dimension only
    (other devices keep their kernel; the kernel raises the shape error)."""
    return x.device.type == DEVICE_TYPE and len(normalized_shape) == 1


def decompose_rms_norm(
    x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None, eps: float = 1e-5
):
    """Inductor decomposition of ``spyre::rms_norm`` for spyre tensors (``NotImplemented`` otherwise)."""
    if not _applies(x, normalized_shape):
        return NotImplemented
    return formula.rms_norm_last_dim(x, weight, eps, _policy())


def decompose_fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
):
    """Inductor decomposition of ``spyre::fused_add_rms_norm`` for spyre tensors."""
    if not _applies(x, normalized_shape):
        return NotImplemented
    return formula.fused_add_rms_norm_last_dim(x, residual, weight, eps, _policy())


def decompose_fused_add_rms_norm_(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
):
    """Inductor decomposition of ``spyre::fused_add_rms_norm_``: the functional formula, then two copies."""
    if not _applies(x, normalized_shape):
        return NotImplemented
    out, summed = formula.fused_add_rms_norm_last_dim(x, residual, weight, eps, _policy())
    residual.copy_(summed)
    x.copy_(out)
    return None


#: op -> its decomposition for spyre tensors.
DECOMPOSITIONS = {
    "rms_norm": decompose_rms_norm,
    "fused_add_rms_norm": decompose_fused_add_rms_norm,
    "fused_add_rms_norm_": decompose_fused_add_rms_norm_,
}


def decomposition_table() -> dict:
    """The decompositions keyed by op overload, as ``make_fx``/Inductor tables are."""
    return {getattr(torch.ops.spyre, name).default: fn for name, fn in DECOMPOSITIONS.items()}


def install() -> None:
    """Registers the decompositions in Inductor's global table. Idempotent."""
    global _installed
    if _installed:
        return
    from torch._inductor.decomposition import register_decomposition

    for op, fn in decomposition_table().items():
        register_decomposition([op])(fn)
    _installed = True
