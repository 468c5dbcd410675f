"""The public functional API: thin, typed wrappers over ``torch.ops.spyre.*``.

Calling ``torch.ops.spyre.<op>`` directly is equivalent; these wrappers also
accept an ``int`` for ``normalized_shape``, carry the documentation, and in
eager mode cost less per call: with plain arguments (tensors that are exactly
``torch.Tensor``/``nn.Parameter``, no torch function mode, ``normalized_shape``
an int or a list/tuple of ints, ``eps`` a float) they make the op's dispatcher
call from C++ (``spyre_ops._C.rms_norm`` & co., see ``csrc/eager_calls.cpp``),
skipping ``torch.ops``' generic argument parsing (about 2 µs of a one-token
call). The call goes through the dispatcher as ``torch.ops`` does (autograd,
functorch, dispatch modes, profiler, every device's kernel), so results and
errors are the same; any other argument takes ``torch.ops``. Under
``torch.compile`` the wrappers trace to the ``torch.ops`` call.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence

import torch

from . import _C
from . import _out_checks  # noqa: F401  (defines spyre::_check_rms_norm_out)

ShapeLike = int | Sequence[int] | torch.Size


def _as_shape(normalized_shape: ShapeLike) -> list[int]:
    """``normalized_shape`` as the op takes it: a list (an int, or a NumPy
    integer, as torch.nn.RMSNorm takes it, stands for one dim)."""
    if isinstance(normalized_shape, int):
        return [normalized_shape]
    if isinstance(normalized_shape, numbers.Integral):
        return [operator.index(normalized_shape)]
    return list(normalized_shape)


def _refuse_tensor_eps(op: str) -> None:
    # torch.ops would turn a 0-dim tensor into a float in eager mode only
    # (under torch.compile that is a data-dependent read); refused in both.
    raise TypeError(f"{op}: eps must be a float, got a Tensor; pass float(eps)")


def rms_norm(
    x: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims of ``x``.

    ``y = x / sqrt(mean(x**2) + eps) * weight``, with the mean taken over the
    trailing dimensions named by ``normalized_shape``, computed in float32
    (float64 for float64 ``x``) and rounded once to ``x.dtype``.

    Args:
        x: float32, float64, float16 or bfloat16 tensor of any shape whose
            trailing dimensions equal ``normalized_shape``; need not be contiguous
            (on CPU, rows that are contiguous in those dimensions are read where
            they are, e.g. per-head q/k views of a fused qkv tensor, without a copy).
        normalized_shape: the trailing dimensions to normalize over (an int for one).
        weight: optional scale of shape ``normalized_shape``, any of those float
            dtypes (a float32 weight with bfloat16 ``x`` is fine), on ``x``'s device.
        eps: finite, non-negative float (not a tensor); added to the mean of squares.
        out: optional preallocated result of ``x``'s shape, dtype and device
            (any strides; may be ``x`` itself). Not differentiable.

    Returns:
        A new contiguous tensor of ``x``'s shape and dtype, or ``out``.

    Raises:
        RuntimeError: for a shape, dtype or device mismatch, or a bad ``eps``.
        TypeError: for a tensor ``eps``.
    """
    if not torch.compiler.is_dynamo_compiling():
        result = _C.rms_norm(x, normalized_shape, weight, eps, out)
        if result is not NotImplemented:
            return result
    if isinstance(eps, torch.Tensor):
        _refuse_tensor_eps("spyre_ops.rms_norm")
    shape = [normalized_shape] if isinstance(normalized_shape, int) else _as_shape(normalized_shape)
    if out is not None:
        if not out.is_contiguous() and torch.compiler.is_compiling():
            # Dynamo refuses out= into a non-contiguous tensor. Under torch.compile
            # the op writes a contiguous buffer, copied into out, after the checks
            # eager mode makes on out itself (see _out_checks).
            torch.ops.spyre._check_rms_norm_out(x, shape, weight, eps, out)
            buffer = torch.empty_like(out, memory_format=torch.contiguous_format)
            torch.ops.spyre.rms_norm.out(x, shape, weight, eps, out=buffer)
            return out.copy_(buffer)
        return torch.ops.spyre.rms_norm.out(x, shape, weight, eps, out=out)
    return torch.ops.spyre.rms_norm(x, shape, weight, eps)


def fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by RMSNorm, in one pass: returns ``(out, new_residual)``.

    ``new_residual = x + residual`` (summed in float32, rounded to ``x.dtype``)
    and ``out = rms_norm(new_residual, normalized_shape, weight, eps)``; the
    inputs are left untouched. ``residual`` must have ``x``'s shape, dtype and
    device. See :func:`rms_norm` for the other arguments.
    """
    if not torch.compiler.is_dynamo_compiling():
        result = _C.fused_add_rms_norm(x, residual, normalized_shape, weight, eps)
        if result is not NotImplemented:
            return result
    if isinstance(eps, torch.Tensor):
        _refuse_tensor_eps("spyre_ops.fused_add_rms_norm")
    return torch.ops.spyre.fused_add_rms_norm(x, residual, _as_shape(normalized_shape), weight, eps)


def fused_add_rms_norm_(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> None:
    """In-place :func:`fused_add_rms_norm`: writes ``out`` into ``x`` and
    ``x + residual`` into ``residual``. ``x`` and ``residual`` must not overlap.
    Not differentiable."""
    if not torch.compiler.is_dynamo_compiling():
        if _C.fused_add_rms_norm_(x, residual, normalized_shape, weight, eps) is not NotImplemented:
            return None
    if isinstance(eps, torch.Tensor):
        _refuse_tensor_eps("spyre_ops.fused_add_rms_norm_")
    torch.ops.spyre.fused_add_rms_norm_(x, residual, _as_shape(normalized_shape), weight, eps)
