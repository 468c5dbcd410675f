"""Jagged nested tensors (``torch.nested.nested_tensor(..., layout=torch.jagged)``)
for the functional spyre ops, as ``torch.nn.functional.rms_norm`` takes them.

A jagged nested tensor stores its rows packed in one dense ``values()`` tensor;
normalizing over trailing dims that exclude the ragged one is the same op on
``values()``, whose result is re-wrapped with the input's offsets. Normalizing
over the ragged dim, and the ``out=`` and in-place ops, are refused with a
clear error. Strided nested tensors are refused by the kernels' own checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import _checks
from ._library import lib

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


def _jagged_rms_norm(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    x, normalized_shape, *rest = args
    _values_shape_ok("spyre::rms_norm", x, normalized_shape)
    return _wrap(func(x.values(), normalized_shape, *rest, **kwargs), x)


def _jagged_fused_add_rms_norm(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> tuple:
    x, residual, normalized_shape, *rest = args
    op = "spyre::fused_add_rms_norm"
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


def _refuse(cls: Any, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
    raise RuntimeError(
        f"{func._schema.name}: jagged nested tensors are supported by spyre::rms_norm and "
        "spyre::fused_add_rms_norm (functional) only; not by out= or the in-place op"
    )


if NestedTensor is not None:
    torch.library.register_torch_dispatch("spyre::rms_norm", NestedTensor, _jagged_rms_norm, lib=lib)
    torch.library.register_torch_dispatch(
        "spyre::fused_add_rms_norm", NestedTensor, _jagged_fused_add_rms_norm, lib=lib
    )
    torch.library.register_torch_dispatch(
        "spyre::rms_norm_backward", NestedTensor, _jagged_rms_norm_backward, lib=lib
    )
    # The backward op has no autograd kernel of its own (see csrc/autograd.cpp):
    # with a nested tensor it passes through autograd to the rule above.
    lib.impl("rms_norm_backward", torch.library.fallthrough_kernel, "AutogradNestedTensor")
    torch.library.register_torch_dispatch("spyre::rms_norm.out", NestedTensor, _refuse, lib=lib)
    torch.library.register_torch_dispatch("spyre::fused_add_rms_norm_", NestedTensor, _refuse, lib=lib)


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


for _name in ("rms_norm", "rms_norm.out", "fused_add_rms_norm", "fused_add_rms_norm_", "rms_norm_backward"):
    _packet, _, _overload = _name.partition(".")
    _op = getattr(getattr(torch.ops.spyre, _packet), _overload or "default")
    lib.impl(_name, _refuse_strided_nested(f"spyre::{_name}", _op._schema), "NestedTensorCPU")
