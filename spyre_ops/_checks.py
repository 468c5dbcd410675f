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
from torch.fx.experimental.symbolic_shapes import guard_or_false

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _size_str(size: int | torch.SymInt) -> str:
    """A size as eager mode prints it: a symbolic size (torch.compile with
    dynamic shapes) is printed as the value it has for this call, not as its symbol."""
    if not isinstance(size, torch.SymInt):
        return str(size)
    node = size.node
    hint = getattr(node, "_hint", None)
    if hint is None:
        try:
            from torch.fx.experimental.symbolic_shapes import optimization_hint

            hint = optimization_hint(size)
        except Exception:  # noqa: BLE001  (older/newer torch, or no hint: fall through)
            hint = getattr(node, "hint", None)
    return str(hint) if hint is not None else f"<size {size} unknown while tracing>"


def _shape_str(shape: Sequence[int | torch.SymInt]) -> str:
    return "[" + ", ".join(_size_str(s) for s in shape) + "]"


def check_tensor_arg(op: str, name: str, t: torch.Tensor | None) -> None:
    """A tensor argument must be a tensor; a nested one only with the jagged layout."""
    torch._check(t is not None, lambda: f"{op}: {name} must be a tensor, got None")
    torch._check(
        not t.is_nested or t.layout == torch.jagged,
        lambda: f"{op}: {name} is a nested tensor with the strided layout; only jagged nested "
        "tensors (torch.nested.nested_tensor(..., layout=torch.jagged)) are supported",
    )


def _check_float(op: str, name: str, t: torch.Tensor) -> None:
    check_tensor_arg(op, name, t)
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
    check_tensor_arg(op, "residual", residual)
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
    check_tensor_arg(op, "out", out)
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


# Overlaps, as the C++ kernels check them (csrc/checks.cpp, csrc/cpu/rms_norm.cpp).
# They read only metadata, so on fake tensors (torch.compile's tracing) they see
# the aliasing of the real inputs and refuse the same calls eager mode refuses.


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except Exception:  # noqa: BLE001  (a tensor without a storage, e.g. functional: nothing to compare)
        return None


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    ka, kb = _storage_key(a), _storage_key(b)
    return ka is not None and ka == kb


def _byte_span(t: torch.Tensor) -> tuple:
    lo = hi = t.storage_offset()
    for size, stride in zip(t.shape, t.stride()):
        reach = (size - 1) * stride
        if guard_or_false(reach < 0):
            lo = lo + reach
        else:
            hi = hi + reach
    return lo * t.element_size(), (hi + 1) * t.element_size()


def may_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Mirror of C++ ``may_overlap``: same storage and intersecting byte ranges."""
    if not _same_storage(a, b) or guard_or_false(a.numel() == 0) or guard_or_false(b.numel() == 0):
        return False
    a0, a1 = _byte_span(a)
    b0, b1 = _byte_span(b)
    return guard_or_false(a0 < b1) and guard_or_false(b0 < a1)


def _reachable(dims: list[tuple[int, int]], below: list[int], k: int, delta: int) -> bool:
    """Mirror of C++ ``reachable``: is delta = sum d_i * stride_i with |d_i| < size_i over dims[:k+1]?"""
    if k < 0:
        return delta == 0
    stride, size = dims[k]
    lo = max(-(size - 1), -((below[k] - delta) // stride))
    hi = min(size - 1, (delta + below[k]) // stride)
    return any(_reachable(dims, below, k - 1, delta - d * stride) for d in range(lo, hi + 1))


def may_share_elements(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Mirror of C++ ``may_share_elements``: exact for same sizes and strides whose dims
    nest, ``may_overlap`` otherwise. Symbolic sizes are specialized (this runs only for
    the rare strided views of one buffer); unknown ones give the conservative answer."""
    if not may_overlap(a, b):
        return False
    try:
        sizes, strides = [int(n) for n in a.shape], [int(st) for st in a.stride()]
        same = sizes == [int(n) for n in b.shape] and strides == [int(st) for st in b.stride()]
        delta = int(b.storage_offset()) - int(a.storage_offset())
    except Exception:  # noqa: BLE001  (an unbacked size: not analysed)
        return True
    if not same or a.element_size() != b.element_size():
        return True
    dims = sorted((st, n) for n, st in zip(sizes, strides) if n > 1)
    below, reach = [], 0
    for st, n in dims:
        if st <= reach:
            return True
        below.append(reach)
        reach += (n - 1) * st
    return _reachable(dims, below, len(dims) - 1, delta)


def check_weight_not_written(op: str, weight: torch.Tensor | None, name: str, written: torch.Tensor) -> None:
    """Refuses a weight that shares memory with ``written`` (out, or an in-place op's x or residual)."""
    torch._check(
        weight is None or not may_overlap(weight, written),
        lambda: f"{op}: weight shares memory with {name}, which the op writes while it still reads "
        "weight; pass a copy (weight.clone())",
    )


def _dense_overlap(a: torch.Tensor, b: torch.Tensor) -> str:
    """Mirror of ``at::get_overlap_status``: "no", "full", "partial" or "too_hard"."""
    if a is b:
        return "full"
    if not _same_storage(a, b) or guard_or_false(a.numel() == 0) or guard_or_false(b.numel() == 0):
        return "no"
    from torch._prims_common import is_non_overlapping_and_dense_or_false as dense

    if not (dense(a) and dense(b)):
        return "too_hard"
    a0 = a.storage_offset() * a.element_size()
    b0 = b.storage_offset() * b.element_size()
    a1 = a0 + a.numel() * a.element_size()
    b1 = b0 + b.numel() * b.element_size()
    if guard_or_false(a0 == b0) and guard_or_false(a1 == b1):
        return "full" if tuple(a.stride()) == tuple(b.stride()) else "partial"
    if guard_or_false(a0 < b1) and guard_or_false(b0 < a1):
        return "partial"
    return "no"


def _overlaps_itself(t: torch.Tensor) -> bool:
    """Mirror of ``at::has_internal_overlap(t) == MemOverlap::Yes``: a stride-0 dim of size > 1."""
    return any(guard_or_false(st == 0) and guard_or_false(sz > 1) for sz, st in zip(t.shape, t.stride()))


def check_out_overlaps(op: str, x: torch.Tensor, weight: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out`` must not overlap weight, nor itself; it may be x itself, and must not overlap it otherwise."""
    check_weight_not_written(op, weight, "out", out)
    torch._check(
        not _overlaps_itself(out),
        lambda: f"{op}: out overlaps itself (an expanded tensor), and the op writes it; pass a tensor whose "
        "elements are distinct (e.g. torch.empty_like(x))",
    )
    status = _dense_overlap(out, x)
    torch._check(
        status != "partial" and (status != "full" or tuple(out.stride()) == tuple(x.stride())),
        lambda: f"{op}: out overlaps x without being x; pass out=x or a tensor that does not share x's memory",
    )


def check_inplace_overlaps(op: str, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None) -> None:
    """The in-place op writes x and residual: they must not overlap each other, nor weight."""
    for name, t in (("x", x), ("residual", residual)):
        torch._check(
            not _overlaps_itself(t),
            lambda: f"{op}: {name} overlaps itself (an expanded tensor), and the op writes it; pass {name}.clone()",
        )
    status = _dense_overlap(x, residual)
    torch._check(
        status in ("no", "too_hard"),
        lambda: f"{op}: x and residual overlap, and the op writes both; pass tensors that do not share memory",
    )
    # Strided views that at::get_overlap_status cannot tell apart: refused unless they
    # provably share no element.
    torch._check(
        status != "too_hard" or not may_share_elements(x, residual),
        lambda: f"{op}: x and residual may overlap (strided views of one buffer that share elements, or "
        "whose layouts cannot be told apart), and the op writes both; pass tensors that do not share "
        "memory (e.g. residual.clone())",
    )
    check_weight_not_written(op, weight, "x", x)
    check_weight_not_written(op, weight, "residual", residual)


def check_call(
    op: str,
    x: torch.Tensor,
    normalized_shape: Sequence,
    weight: torch.Tensor | None,
    eps: float,
    *,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    inplace: bool = False,
) -> None:
    """Every check of one call of ``op``, in the C++ kernels' order (arguments, residual,
    out, overlaps), then the limits of x's device: what the fake kernels and the Spyre
    kernels check, so that eager mode and torch.compile refuse a call alike."""
    check_rms_norm_args(op, x, normalized_shape, weight, eps)
    if residual is not None:
        check_residual(op, x, residual)
    if out is not None:
        check_out(op, x, out)
        check_out_overlaps(op, x, weight, out)
    if inplace:
        check_inplace_overlaps(op, x, residual, weight)
    check_device_limits(op, x, normalized_shape)
