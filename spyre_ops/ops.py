"""The public functional API: thin, typed wrappers over ``torch.ops.spyre.*``.

Calling ``torch.ops.spyre.<op>`` directly is equivalent; these wrappers only
accept an ``int`` for ``normalized_shape`` and carry the documentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ShapeLike = int | Sequence[int] | torch.Size


def _as_shape(normalized_shape: ShapeLike) -> list[int]:
    if isinstance(normalized_shape, int):
        return [normalized_shape]
    return list(normalized_shape)


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
            trailing dimensions equal ``normalized_shape``; need not be contiguous.
        normalized_shape: the trailing dimensions to normalize over (an int for one).
        weight: optional scale of shape ``normalized_shape``, any of those float
            dtypes (a float32 weight with bfloat16 ``x`` is fine), on ``x``'s device.
        eps: finite, non-negative; added to the mean of squares.
        out: optional preallocated result of ``x``'s shape, dtype and device
            (any strides; may be ``x`` itself). Not differentiable.

    Returns:
        A new contiguous tensor of ``x``'s shape and dtype, or ``out``.

    Raises:
        RuntimeError: for a shape, dtype or device mismatch, or a bad ``eps``.
    """
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    if out is not None:
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
    torch.ops.spyre.fused_add_rms_norm_(x, residual, _as_shape(normalized_shape), weight, eps)
