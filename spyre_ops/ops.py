"""The public functional API: thin, typed wrappers over ``torch.ops.spyre.*`` and, for the
Gemma ops, ``torch.ops.spyre_ops.gemma_*`` (one shared body per op, :class:`_Family`).

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
from typing import Any, NamedTuple

import torch

from . import _C
from . import nested as _nested
from . import _out_checks
from ._variants import GEMMA, RMS_NORM, Variant

try:  # NumPy is optional for torch
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

try:  # Dynamo's compile-time hook, to tell a constant NumPy eps from data (see _compiled_numpy_eps)
    from torch._dynamo.comptime import comptime as _comptime
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
except ImportError:  # pragma: no cover  (a torch without it: PyTorch's own data-dependent error)
    _comptime = None

ShapeLike = int | Sequence[int] | torch.Size


class _Family(NamedTuple):
    """What the wrappers of one op family (:mod:`spyre_ops._variants`) call."""

    api: str  # the public wrappers' names without the op, for messages: "spyre_ops.gemma_"
    rms_norm_name: str  # the op's qualified name, for messages: "spyre_ops::gemma_rms_norm"
    rms_norm: Any  # torch.ops.<ns>.<prefix>rms_norm
    check_out: Any  # torch.ops.<ns>._check_<prefix>rms_norm_out
    check_inplace: Any  # torch.ops.<ns>._check_<prefix>fused_add_rms_norm_
    fused_add_rms_norm: Any
    fused_add_rms_norm_: Any
    eager_rms_norm: Any  # spyre_ops._C.<prefix>rms_norm & co. (csrc/eager_calls.cpp)
    eager_fused_add_rms_norm: Any
    eager_fused_add_rms_norm_: Any


def _family(variant: Variant) -> _Family:
    def eager(op: str) -> Any:
        return getattr(_C, variant.name(op))

    return _Family(
        api=f"spyre_ops.{variant.prefix}",
        rms_norm_name=variant.qualname("rms_norm"),
        rms_norm=variant.packet("rms_norm"),
        check_out=_out_checks.check_op(variant),
        check_inplace=_out_checks.check_op(variant, "fused_add_rms_norm_"),
        fused_add_rms_norm=variant.packet("fused_add_rms_norm"),
        fused_add_rms_norm_=variant.packet("fused_add_rms_norm_"),
        eager_rms_norm=eager("rms_norm"),
        eager_fused_add_rms_norm=eager("fused_add_rms_norm"),
        eager_fused_add_rms_norm_=eager("fused_add_rms_norm_"),
    )


_PLAIN = _family(RMS_NORM)
_GEMMA = _family(GEMMA)


def _as_shape(normalized_shape: ShapeLike, op: str = "spyre_ops.rms_norm") -> list[int]:
    """``normalized_shape`` as the op takes it: a list. An int, a NumPy integer (as
    torch.nn.RMSNorm takes it) or a 0-dim integer tensor (what ``torch.jit.trace``
    makes of ``x.shape[-1]``) stands for one dim; a 1-dim integer tensor for its
    elements. Anything else that is not a sequence is refused, naming ``op``."""
    if isinstance(normalized_shape, int):
        return [normalized_shape]
    if _np is not None and isinstance(normalized_shape, (_np.integer, _np.ndarray)):
        if torch.compiler.is_dynamo_compiling():
            # Dynamo traces a NumPy integer as a 0-dim array (a tensor): its value as a
            # Python int (a constant for a literal, a symbolic size for an input).
            sizes = torch.as_tensor(normalized_shape)
            return [sizes.item()] if sizes.dim() == 0 else sizes.tolist()
        if normalized_shape.ndim == 0:
            return [operator.index(normalized_shape)]
        return [operator.index(s) for s in normalized_shape]
    if isinstance(normalized_shape, torch.Tensor):
        if normalized_shape.dim() <= 1 and not (
            normalized_shape.is_floating_point() or normalized_shape.is_complex()
            or normalized_shape.dtype == torch.bool
        ):
            return [int(s) for s in normalized_shape.reshape(-1)]
        raise TypeError(
            f"{op}: normalized_shape must be an int or a sequence of ints, got a {normalized_shape.dim()}-dim "
            f"{normalized_shape.dtype} tensor; pass the sizes as ints, e.g. list(x.shape[-1:])"
        )
    if isinstance(normalized_shape, numbers.Integral):
        return [operator.index(normalized_shape)]
    if not isinstance(normalized_shape, Sequence):
        raise TypeError(
            f"{op}: normalized_shape must be an int or a sequence of ints, got "
            f"{type(normalized_shape).__name__}; pass e.g. x.shape[-1] or list(x.shape[-k:])"
        )
    return list(normalized_shape)


def _as_eps(eps: float, op: str) -> float:
    """``eps`` as the op takes it. A tensor is refused: torch.ops would turn a 0-dim
    one into a float in eager mode only (under torch.compile that is a data-dependent
    read)."""
    if isinstance(eps, torch.Tensor):
        raise TypeError(f"{op}: eps must be a float, got a Tensor; pass float(eps)")
    if _np is not None and isinstance(eps, (_np.number, _np.ndarray)) and torch.compiler.is_dynamo_compiling():
        return _compiled_numpy_eps(eps, op)
    return eps


def _compiled_numpy_eps(eps: Any, op: str) -> float:
    """Under torch.compile, a NumPy ``eps`` as the float the op takes, as eager mode converts it.

    Dynamo traces a NumPy scalar as a 0-dim tensor. Its ``item()`` is a constant when
    the scalar is made in the compiled code (``np.float32(1e-5)``), and a float Dynamo
    specializes on (with a guard) for an ``np.float64`` argument (a ``float`` subclass).
    For any other NumPy float that comes from outside the compiled code (an argument,
    an attribute) it is data Dynamo cannot specialize on: refused, naming the fix.
    """
    value = torch.as_tensor(eps).item()
    if _comptime is not None:
        _comptime(_refuse_data_eps)
    return value


def _refuse_data_eps(ctx: Any) -> None:
    """Run by Dynamo while it traces :func:`_compiled_numpy_eps` (``torch._dynamo.comptime``):
    refuses a ``value`` that is data (an unbacked symbol), naming ``op`` and the fix."""
    value = ctx.get_local("value")
    fake = None if value.is_python_constant() or not value.is_proxy() else value.as_fake()
    if isinstance(fake, torch.SymFloat) and free_unbacked_symbols(fake):
        op = ctx.get_local("op").as_python_constant()
        raise TypeError(
            f"{op}: eps is a NumPy scalar passed into the compiled code (an argument or attribute), "
            "which torch.compile traces as data, not the constant eps must be (only np.float64, a float "
            "subclass, is specialized); pass a Python float (float(eps))"
        )


def _check_out(out: object, op: str) -> None:
    if out is not None and not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{op}: out must be a tensor or None, got {type(out).__name__}; pass out=torch.empty_like(x)"
        )


def _rms_norm(
    f: _Family, x: torch.Tensor, normalized_shape: ShapeLike, weight: torch.Tensor | None, eps: float,
    out: torch.Tensor | None,
) -> torch.Tensor:
    if not torch.compiler.is_dynamo_compiling():
        result = f.eager_rms_norm(x, normalized_shape, weight, eps, out)
        if result is not NotImplemented:
            return result
    op = f.api + "rms_norm"
    eps = _as_eps(eps, op)
    shape = _as_shape(normalized_shape, op)
    _check_out(out, op)
    _nested.check_normalized_dims(f.rms_norm_name, x, shape)
    if out is not None:
        if torch.compiler.is_compiling():
            # The checks of out as eager mode makes them, in the compiled graph too (see
            # _out_checks): functionalized, rms_norm.out is a functional call and a copy.
            f.check_out(x, shape, weight, eps, out)
        if not out.is_contiguous() and torch.compiler.is_compiling():
            # Dynamo refuses out= into a non-contiguous tensor. Under torch.compile
            # the op writes a contiguous buffer, copied into out.
            buffer = torch.empty_like(out, memory_format=torch.contiguous_format)
            f.rms_norm.out(x, shape, weight, eps, out=buffer)
            return out.copy_(buffer)
        return f.rms_norm.out(x, shape, weight, eps, out=out)
    return f.rms_norm(x, shape, weight, eps)


def _fused_add_rms_norm(
    f: _Family, x: torch.Tensor, residual: torch.Tensor, normalized_shape: ShapeLike,
    weight: torch.Tensor | None, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    if not torch.compiler.is_dynamo_compiling():
        result = f.eager_fused_add_rms_norm(x, residual, normalized_shape, weight, eps)
        if result is not NotImplemented:
            return result
    op = f.api + "fused_add_rms_norm"
    eps = _as_eps(eps, op)
    return f.fused_add_rms_norm(x, residual, _as_shape(normalized_shape, op), weight, eps)


def _fused_add_rms_norm_(
    f: _Family, x: torch.Tensor, residual: torch.Tensor, normalized_shape: ShapeLike,
    weight: torch.Tensor | None, eps: float,
) -> None:
    if not torch.compiler.is_dynamo_compiling():
        if f.eager_fused_add_rms_norm_(x, residual, normalized_shape, weight, eps) is not NotImplemented:
            return None
    op = f.api + "fused_add_rms_norm_"
    eps = _as_eps(eps, op)
    shape = _as_shape(normalized_shape, op)
    if torch.compiler.is_compiling():
        # The overlap checks in the compiled graph too (see _out_checks): functionalized,
        # the op runs on copies of x and residual, which never overlap.
        f.check_inplace(x, residual, shape, weight, eps)
    f.fused_add_rms_norm_(x, residual, shape, weight, eps)


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
    return _rms_norm(_PLAIN, x, normalized_shape, weight, eps, out)


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
    return _fused_add_rms_norm(_PLAIN, x, residual, normalized_shape, weight, eps)


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
    _fused_add_rms_norm_(_PLAIN, x, residual, normalized_shape, weight, eps)


def gemma_rms_norm(
    x: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gemma's RMSNorm: ``y = x / sqrt(mean(x**2) + eps) * (1 + weight)`` (``torch.ops.spyre_ops.gemma_rms_norm``).

    As Hugging Face's ``Gemma3RMSNorm`` and vLLM's ``GemmaRMSNorm`` compute it:
    the mean of squares and ``1 + weight`` in float32 (float64 for float64 ``x``),
    the result rounded once to ``x.dtype``. The ``1`` is added inside the kernel,
    so no ``1 + weight`` tensor is made per call. ``weight=None`` means no scale
    at all (``y = x / sqrt(mean(x**2) + eps)``). Arguments, results and errors
    are those of :func:`rms_norm`; only the default ``eps`` (Gemma's 1e-6) differs.
    """
    return _rms_norm(_GEMMA, x, normalized_shape, weight, eps, out)


def gemma_fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by :func:`gemma_rms_norm`, in one pass: returns ``(out, new_residual)``.

    ``new_residual = x + residual`` rounded to ``x.dtype`` first, then normalized
    (as vLLM's fused kernels do); the inputs are left untouched. See
    :func:`fused_add_rms_norm` for the arguments.
    """
    return _fused_add_rms_norm(_GEMMA, x, residual, normalized_shape, weight, eps)


def gemma_fused_add_rms_norm_(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: ShapeLike,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> None:
    """In-place :func:`gemma_fused_add_rms_norm`: writes ``out`` into ``x`` and
    ``x + residual`` into ``residual``. ``x`` and ``residual`` must not overlap.
    Not differentiable."""
    _fused_add_rms_norm_(_GEMMA, x, residual, normalized_shape, weight, eps)
