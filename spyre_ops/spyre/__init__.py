"""The Spyre (PrivateUse1) kernels of the spyre ops, and their compute-dtype policy.

``import spyre_ops`` registers C++ kernels (``csrc/spyre``) for PyTorch's
PrivateUse1 dispatch key, which torch-spyre names ``"spyre"``: with torch-spyre
loaded, ``torch.ops.spyre.rms_norm`` and the two fused ops on spyre tensors run
them. They use only ops torch-spyre runs on the device, so a call makes no
host<->device copy and no CPU fallback; only the last dimension can be
normalized (Spyre's limit).

Compute dtype: Spyre computes in fp16 (bf16 is stored as fp16, and float32
reductions over a padded row are unreliable there), so by default float16,
bfloat16 and float32 inputs are computed in fp16, each row first scaled by its
max-abs so that neither |x| up to 65504 nor |x| ~ 1e-3 loses precision; the
result has fp16 accuracy (vLLM's tolerance for this op: atol 1e-2, rtol 2e-3)
in the input's dtype. Stacks whose float32 reductions are reliable can choose
float32 compute with :func:`set_compute_dtype` or the environment variable
``SPYRE_OPS_SPYRE_COMPUTE_DTYPE=float32`` (read at import). float64 inputs are
always computed in float64.

With torch-spyre loaded, :mod:`spyre_ops.spyre.torch_spyre` also makes the ops
lowerable by its Inductor backend. Verified only on the emulated device
(:mod:`spyre_ops.emulator`), not on Spyre hardware.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .. import _C

__all__ = ["compute_dtype", "set_compute_dtype", "use_compute_dtype"]

ENV_VAR = "SPYRE_OPS_SPYRE_COMPUTE_DTYPE"
_BY_NAME = {"float16": torch.float16, "float32": torch.float32}


def compute_dtype() -> torch.dtype:
    """The dtype the Spyre kernels compute in: ``torch.float16`` (default) or ``torch.float32``."""
    return _BY_NAME[_C.spyre_compute_dtype()]


def set_compute_dtype(dtype: torch.dtype) -> None:
    """Sets the dtype the Spyre kernels compute float16, bfloat16 and float32 inputs in.

    Args:
        dtype: ``torch.float16`` (the default, what Spyre computes in) or
            ``torch.float32`` (for a stack with reliable float32 reductions).

    Raises:
        ValueError: for any other dtype.
    """
    for name, d in _BY_NAME.items():
        if dtype == d:
            _C.set_spyre_compute_dtype(name)
            return
    raise ValueError(f"spyre_ops.spyre.set_compute_dtype: dtype must be torch.float16 or torch.float32, got {dtype}")


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
    _C.set_spyre_compute_dtype(name)


_apply_environment()

from . import torch_spyre  # noqa: E402

if torch_spyre.loaded():
    torch_spyre.install()
