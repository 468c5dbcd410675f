"""Argument checks of the spyre ops, for the Python-side kernels (fake/meta).

They mirror ``csrc/checks.cpp`` message for message, so an error reads the
same in eager mode and under ``torch.compile``. They use ``torch._check`` and
read only metadata (shapes, dtypes, devices), never data, so they work on fake
tensors with symbolic shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _shape_str(shape: Sequence[int | torch.SymInt]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check_float(op: str, name: str, t: torch.Tensor) -> None:
    torch._check(
        t.dtype in FLOAT_DTYPES,
        lambda: f"{op}: {name} must be a float32, float64, float16 or bfloat16 tensor, "
        f"got {t.dtype}",
    )


def _check_same_device(op: str, name: str, x: torch.Tensor, t: torch.Tensor) -> None:
    torch._check(
        t.device == x.device,
        lambda: f"{op}: {name} is on {t.device} but x is on {x.device}; "
        "all tensors must be on the same device",
    )


def _check_same_shape(shape: Sequence, expected: Sequence, message) -> None:
    torch._check(len(shape) == len(expected), message)
    for a, b in zip(shape, expected):
        torch._check(a == b, message)


def check_rms_norm_args(
    op: str,
    x: torch.Tensor,
    normalized_shape: Sequence[int | torch.SymInt],
    weight: torch.Tensor | None,
    eps: float,
) -> None:
    """Checks x, normalized_shape, weight and eps, in the order the C++ kernels do."""
    _check_float(op, "x", x)
    k = len(normalized_shape)
    torch._check(
        k > 0,
        lambda: f"{op}: normalized_shape must name at least one trailing dimension of x, got []",
    )

    def mismatch() -> str:
        return (
            f"{op}: normalized_shape {_shape_str(normalized_shape)} does not match the "
            f"trailing dimensions of x, whose shape is {_shape_str(x.shape)}"
        )

    torch._check(k <= x.dim(), mismatch)
    _check_same_shape(x.shape[x.dim() - k :], normalized_shape, mismatch)
    if weight is not None:
        _check_float(op, "weight", weight)
        _check_same_device(op, "weight", x, weight)
        _check_same_shape(
            weight.shape,
            normalized_shape,
            lambda: f"{op}: weight has shape {_shape_str(weight.shape)} but normalized_shape "
            f"is {_shape_str(normalized_shape)}",
        )
    torch._check(
        math.isfinite(eps) and eps >= 0.0,
        lambda: f"{op}: eps must be finite and non-negative, got {eps:g}",
    )


def check_device_limits(op: str, x: torch.Tensor, normalized_shape: Sequence) -> None:
    """Limits of the device ``x`` lives on, as its C++ kernel checks them last:
    on Spyre (PyTorch's PrivateUse1 device) only the last dimension can be normalized."""
    if x.device.type == torch._C._get_privateuse1_backend_name():
        torch._check(
            len(normalized_shape) == 1,
            lambda: f"{op}: on Spyre only the last dimension can be normalized, so "
            f"normalized_shape must have exactly one element, got {_shape_str(normalized_shape)}",
        )


def check_residual(op: str, x: torch.Tensor, residual: torch.Tensor) -> None:
    """Checks that residual can be added to x: same device, shape and dtype."""
    _check_same_device(op, "residual", x, residual)
    _check_same_shape(
        residual.shape,
        x.shape,
        lambda: f"{op}: residual has shape {_shape_str(residual.shape)} but x has shape "
        f"{_shape_str(x.shape)}",
    )
    torch._check(
        residual.dtype == x.dtype,
        lambda: f"{op}: residual has dtype {residual.dtype} but x has dtype {x.dtype}",
    )


def check_out(op: str, x: torch.Tensor, out: torch.Tensor) -> None:
    """Checks that ``out`` can receive the result for x: same device, shape and dtype."""
    _check_same_device(op, "out", x, out)
    _check_same_shape(
        out.shape,
        x.shape,
        lambda: f"{op}: out has shape {_shape_str(out.shape)} but x has shape {_shape_str(x.shape)}",
    )
    torch._check(
        out.dtype == x.dtype,
        lambda: f"{op}: out has dtype {out.dtype} but x has dtype {x.dtype}",
    )
