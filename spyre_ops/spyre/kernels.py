"""The PrivateUse1 ("spyre") kernels of the spyre ops.

Each kernel checks its arguments as the fake kernels and the CPU kernels do
(same messages, same order, :func:`spyre_ops._checks.check_call`); the in-place
op writes x and residual with separate copies, so the checks refuse x and
residual that may share an element (on every device). Each
flattens the leading dims of x to 2-D (a view for a contiguous x; other
layouts are first copied on the device into a dense tensor, as torch-spyre's
compiled kernels need offset-free dense inputs) and runs the formula as one cached compiled graph (:mod:`spyre_ops.spyre.graphs`).
``out=`` and the in-place op then write their result with device-to-device
copies. A weight of another dtype than x's is brought to x's dtype outside the
graph, once per weight and version (:mod:`spyre_ops.spyre.weights`). The
backward op has no Spyre kernel. Every op family (:mod:`spyre_ops._variants`)
has these kernels; a Gemma op's weight offset is added to the weight inside the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import _checks
from .._variants import RMS_NORM, Variant
from . import compute_dtype, graphs, weights


def _dense(t: torch.Tensor) -> torch.Tensor:
    """t itself if it is contiguous and starts its storage; else a dense copy on its device."""
    if t.is_contiguous() and t.storage_offset() == 0:
        return t
    dense = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    dense.copy_(t)
    return dense


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as (rows, last dim), dense."""
    return _dense(t).view(-1, t.shape[-1])


def _normalize(x: torch.Tensor, weight: torch.Tensor | None, eps: float, weight_offset: float) -> torch.Tensor:
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    w = None if weight is None else weights.in_dtype(_dense(weight), x.dtype)
    return graphs.run("rms_norm", _rows(x), None, w, eps, compute_dtype(), weight_offset).view(x.shape)


def _fused(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float, weight_offset: float):
    if x.numel() == 0:
        return (torch.empty(x.shape, dtype=x.dtype, device=x.device),
                torch.empty(x.shape, dtype=x.dtype, device=x.device))
    w = None if weight is None else weights.in_dtype(_dense(weight), x.dtype)
    out, summed = graphs.run("fused_add_rms_norm", _rows(x), _rows(residual), w, eps, compute_dtype(), weight_offset)
    return out.view(x.shape), summed.view(x.shape)


def kernels(variant: Variant) -> dict[str, Callable[..., Any]]:
    """The Spyre kernels of ``variant``'s ops, by op name in the plain family ("rms_norm.out")."""
    name = variant.qualname
    offset = variant.weight_offset

    def rms_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                 eps: float = variant.eps) -> torch.Tensor:
        """Spyre kernel of ``rms_norm``."""
        _checks.check_call(name("rms_norm"), x, normalized_shape, weight, eps)
        return _normalize(x, weight, eps, offset)

    def rms_norm_out(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                     eps: float = variant.eps, *, out: torch.Tensor) -> torch.Tensor:
        """Spyre kernel of ``rms_norm.out``: the result in full first, then one copy into out."""
        _checks.check_call(name("rms_norm.out"), x, normalized_shape, weight, eps, out=out)
        out.copy_(_normalize(x, weight, eps, offset))
        return out

    def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                           weight: torch.Tensor | None = None, eps: float = variant.eps):
        """Spyre kernel of ``fused_add_rms_norm``."""
        _checks.check_call(name("fused_add_rms_norm"), x, normalized_shape, weight, eps, residual=residual)
        return _fused(x, residual, weight, eps, offset)

    def fused_add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                            weight: torch.Tensor | None = None, eps: float = variant.eps) -> None:
        """Spyre kernel of ``fused_add_rms_norm_``: the functional result, then two copies."""
        _checks.check_call(name("fused_add_rms_norm_"), x, normalized_shape, weight, eps, residual=residual,
                           inplace=True)
        out, summed = _fused(x, residual, weight, eps, offset)
        residual.copy_(summed)
        x.copy_(out)

    return {
        "rms_norm": rms_norm,
        "rms_norm.out": rms_norm_out,
        "fused_add_rms_norm": fused_add_rms_norm,
        "fused_add_rms_norm_": fused_add_rms_norm_,
    }


_registered: set[str] = set()


def register(lib: torch.library.Library, variant: Variant = RMS_NORM) -> None:
    """Registers ``variant``'s kernels for PrivateUse1 in ``lib`` (the library of its namespace). Idempotent."""
    if variant.namespace + variant.prefix in _registered:
        return
    for op, kernel in kernels(variant).items():
        lib.impl(variant.name(op), kernel, "PrivateUse1")
    _registered.add(variant.namespace + variant.prefix)
