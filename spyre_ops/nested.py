"""Jagged nested tensors (``torch.nested.nested_tensor(..., layout=torch.jagged)``)
for the functional spyre ops, as ``torch.nn.functional.rms_norm`` takes them.

A jagged nested tensor stores its rows packed in one dense ``values()`` tensor;
normalizing over trailing dims that exclude the ragged one is the same op on
``values()``, whose result is re-wrapped with the input's offsets. Normalizing
over the ragged dim, and the ``out=`` and in-place ops, are refused with a
clear RuntimeError (raw ``torch.ops`` calls too). Strided nested tensors are
refused by the kernels' own checks.
Every op family (:mod:`spyre_ops._variants`, the Gemma ops too) gets these rules.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from . import _checks
from ._library import LIBRARIES
from ._variants import RMS_NORM, VARIANTS, Variant

try:  # the class behind layout=torch.jagged (a PyTorch internal, present in torch 2.x)
    from torch.nested._internal.nested_tensor import NestedTensor
except ImportError:  # pragma: no cover  (a torch without it: jagged inputs raise PyTorch's error)
    NestedTensor = None


def check_normalized_dims(op: str, x: torch.Tensor, normalized_shape: Sequence[int]) -> None:
    """For the wrappers, before ``torch.ops``: PyTorch's own nested-tensor code
    intercepts any op named ``rms_norm`` and raises a ValueError for the ragged
    dim before our rule runs; this raises our RuntimeError first."""
    if NestedTensor is not None and isinstance(x, NestedTensor):
        _values_shape_ok(op, x, normalized_shape)


def _check_raw_calls_first() -> None:
    """The same for a raw ``torch.ops.spyre.rms_norm(...)`` call, which reaches PyTorch's
    nested-tensor ``__torch_function__`` as the op packet, named ``rms_norm``: its
    torch-function handler (``torch.nested._internal.ops.jagged_torch_function``, looked
    up on every call) is wrapped to run our check first for that packet only. Every
    other call, and any overload (``torch.ops.spyre.rms_norm.default``, which reaches
    our rule below), goes to PyTorch's handler unchanged."""
    try:
        from torch.nested._internal import ops as nested_ops
    except ImportError:  # pragma: no cover  (a torch without it: PyTorch's ValueError stays)
        return
    original = getattr(nested_ops, "jagged_torch_function", None)
    if original is None or getattr(original, "_spyre_ops_checks_first", False):
        return
    packet = RMS_NORM.packet("rms_norm")
    op = RMS_NORM.qualname("rms_norm")

    @functools.wraps(original)
    def jagged_torch_function(func: Any, *args: Any, **kwargs: Any) -> Any:
        if func is packet:
            x = args[0] if args else kwargs.get("x")
            shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
            if isinstance(shape, Sequence):
                check_normalized_dims(op, x, shape)
        return original(func, *args, **kwargs)

    jagged_torch_function._spyre_ops_checks_first = True
    nested_ops.jagged_torch_function = jagged_torch_function


def _values_shape_ok(op: str, x: torch.Tensor, normalized_shape: Sequence[int]) -> None:
    k = len(normalized_shape)
    if x.dim() - k <= x._ragged_idx:
        raise RuntimeError(
            f"{op}: x is a jagged nested tensor whose ragged dimension (dim {x._ragged_idx}) is "
            f"among the normalized dimensions (normalized_shape has {k} of its {x.dim()} dims); "
            "only dimensions after the ragged one can be normalized"
        )


def _wrap(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return NestedTensor(
        values,
        like.offsets(),
        lengths=like.lengths(),
        _ragged_idx=like._ragged_idx,
        _metadata_cache=like._metadata_cache,
    )


def _op_name(func: Any) -> str:
    """The qualified name of the op ``func`` (an OpOverload), as the messages spell it."""
    return func._schema.name


def _jagged_rms_norm(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    x, normalized_shape, *rest = args
    _values_shape_ok(_op_name(func), x, normalized_shape)
    return _wrap(func(x.values(), normalized_shape, *rest, **kwargs), x)


def _jagged_fused_add_rms_norm(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> tuple:
    x, residual, normalized_shape, *rest = args
    op = _op_name(func)
    _values_shape_ok(op, x, normalized_shape)
    same_rows = isinstance(residual, NestedTensor) and (
        residual.offsets() is x.offsets() or torch.equal(residual.offsets(), x.offsets())
    )
    if not same_rows:
        raise RuntimeError(f"{op}: x is a jagged nested tensor, so residual must be one with x's offsets")
    out, summed = func(x.values(), residual.values(), normalized_shape, *rest, **kwargs)
    return _wrap(out, x), _wrap(summed, x)


def _jagged_rms_norm_backward(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> tuple:
    grad_out, x, normalized_shape, *rest = args
    grad_x, grad_weight = func(grad_out.values(), x.values(), normalized_shape, *rest, **kwargs)
    return _wrap(grad_x, x), grad_weight


def _refuser(variant: Variant) -> Any:
    """The rule of ``variant``'s out= and in-place ops: a clear refusal."""
    supported = f"{variant.qualname('rms_norm')} and {variant.qualname('fused_add_rms_norm')}"

    def refuse(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        raise RuntimeError(
            f"{_op_name(func)}: jagged nested tensors are supported by {supported} "
            "(functional) only; not by out= or the in-place op"
        )

    return refuse


#: op (its name in the plain family) -> its rule for jagged nested tensors.
RULES = {
    "rms_norm": _jagged_rms_norm,
    "fused_add_rms_norm": _jagged_fused_add_rms_norm,
    "rms_norm_backward": _jagged_rms_norm_backward,
}
REFUSED = ("rms_norm.out", "fused_add_rms_norm_")


def register(variant: Variant) -> None:
    """Registers the jagged nested-tensor rules of ``variant``'s ops."""
    lib = LIBRARIES[variant.namespace]
    rules = {**RULES, **{op: _refuser(variant) for op in REFUSED}}
    for op, rule in rules.items():
        torch.library.register_torch_dispatch(variant.qualname(op), NestedTensor, rule, lib=lib)
    # The backward op has no autograd kernel of its own (see csrc/autograd.cpp):
    # with a nested tensor it passes through autograd to the rule above.
    lib.impl(variant.name("rms_norm_backward"), torch.library.fallthrough_kernel, "AutogradNestedTensor")


if NestedTensor is not None:
    for _variant in VARIANTS:
        register(_variant)
    _check_raw_calls_first()


def _refuse_strided_nested(op: str, schema: torch._C.FunctionSchema) -> Any:
    """A kernel for the NestedTensorCPU key, which a strided nested tensor in any
    argument (weight too, which the autograd kernel does not look at) dispatches to:
    it raises the kernels' own refusal, naming the argument, instead of "Could not run"."""

    def kernel(*args: Any, **kwargs: Any) -> Any:
        values = list(zip((a.name for a in schema.arguments), args)) + list(kwargs.items())
        for name, value in values:
            if isinstance(value, torch.Tensor):
                _checks.check_tensor_arg(op, name, value)
        raise RuntimeError(f"{op}: strided nested tensors are not supported")  # pragma: no cover

    return kernel


for _variant in VARIANTS:
    for _name in ("rms_norm", "rms_norm.out", "fused_add_rms_norm", "fused_add_rms_norm_", "rms_norm_backward"):
        _packet, _, _overload = _name.partition(".")
        _op = getattr(_variant.packet(_packet), _overload or "default")
        LIBRARIES[_variant.namespace].impl(
            _variant.name(_name), _refuse_strided_nested(_variant.qualname(_name), _op._schema), "NestedTensorCPU"
        )
