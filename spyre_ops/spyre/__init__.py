"""The Spyre (PrivateUse1) kernels of the spyre ops, and their compute-dtype policy.

``import spyre_ops`` registers kernels for PyTorch's PrivateUse1 dispatch key,
which torch-spyre names ``"spyre"`` (:mod:`spyre_ops.spyre.kernels`). On spyre
tensors an eager call runs the whole formula (:mod:`spyre_ops.spyre.formula`)
as one compiled graph, compiled once per shape signature
(:mod:`spyre_ops.spyre.graphs`): no host<->device copy, no CPU fallback, no
per-op compile. Only the last dimension can be normalized (Spyre's limit); x
may have any rank (the leading dims are flattened).

Compute dtype: Spyre computes in fp16 (bf16 is stored as fp16, and float32
reductions over a padded row are unreliable there), so by default float16,
bfloat16 and float32 inputs are computed in fp16, each row first scaled by its
max-abs, so that no row, however large or small, and no eps overflows or
underflows; the result has fp16 accuracy (vLLM's tolerance for this op: atol
1e-2, rtol 2e-3) in the input's dtype. Stacks whose float32 reductions are
reliable can choose float32 compute with :func:`set_compute_dtype` or the
environment variable ``SPYRE_OPS_SPYRE_COMPUTE_DTYPE=float32`` (read at
import). float64 inputs are always computed in float64. Eager graphs are cached
per compute dtype, and compiled graphs that decomposed the ops are guarded on
it (a change recompiles them).

With torch-spyre loaded, :mod:`spyre_ops.spyre.torch_spyre` also makes the ops
lowerable by its Inductor backend.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["compute_dtype", "set_compute_dtype", "use_compute_dtype"]

ENV_VAR = "SPYRE_OPS_SPYRE_COMPUTE_DTYPE"
_BY_NAME = {"float16": torch.float16, "float32": torch.float32}
_policy: torch.dtype = torch.float16


def compute_dtype() -> torch.dtype:
    """The dtype the Spyre kernels compute in: ``torch.float16`` (default) or ``torch.float32``."""
    return _policy


def set_compute_dtype(dtype: torch.dtype) -> None:
    """Sets the dtype the Spyre kernels compute float16, bfloat16 and float32 inputs in.

    Process-wide. Eager calls use it from the next call on; compiled graphs that
    decomposed a spyre op with the previous value are recompiled on their next call.

    Args:
        dtype: ``torch.float16`` (the default, what Spyre computes in) or
            ``torch.float32`` (for a stack with reliable float32 reductions).

    Raises:
        ValueError: for any other dtype.
    """
    global _policy
    if dtype not in _BY_NAME.values():
        raise ValueError(
            f"spyre_ops.spyre.set_compute_dtype: dtype must be torch.float16 or torch.float32, got {dtype}"
        )
    _policy = dtype


@contextlib.contextmanager
def use_compute_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Sets the Spyre compute dtype inside a ``with`` block (process-wide), then restores it."""
    previous = compute_dtype()
    set_compute_dtype(dtype)
    try:
        yield
    finally:
        set_compute_dtype(previous)


def _apply_environment() -> None:
    name = os.environ.get(ENV_VAR)
    if not name:
        return
    if name not in _BY_NAME:
        raise ValueError(f"spyre_ops: {ENV_VAR} must be float16 or float32, got {name!r}")
    set_compute_dtype(_BY_NAME[name])


_apply_environment()

from . import torch_spyre  # noqa: E402

if torch_spyre.loaded():
    torch_spyre.install()
