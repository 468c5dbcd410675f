"""The weight of a Spyre call in x's dtype, converted once per weight and version.

torch-spyre's compiler rejects graphs that mix an fp32 tensor with one converted
from SEN169 on the device ("Multi-arg pointwise with mixed EA"), the case of a
weight whose dtype differs from x's (vLLM's GemmaRMSNorm hands over an fp32
``1 + w`` with fp16 or bf16 activations). So the eager kernels give the graph a
weight in x's own dtype: converted outside the graph, through the host (a device
to device dtype conversion is not a device op on Spyre), once for each weight
and each version of it (an in-place update of the weight bumps its version and
is converted again), and cached while the weight lives. The rounding of the
weight to x's dtype is at most half an ulp of x's dtype, within the Spyre
tolerance.

Compiled graphs reach the same conversion through the op
``torch.ops.spyre_ops.spyre_weight_in_dtype`` (:data:`WEIGHT_IN_DTYPE`), which the
decompositions put in front of the formula for a weight that is a graph input of
another dtype (:mod:`spyre_ops.spyre.torch_spyre`): an opaque op, so torch-spyre's
compiler runs it as an extern call (its kernel is :func:`in_dtype`, cached as for
eager calls) and the formula's kernel sees a weight of x's dtype.
"""

from __future__ import annotations

import threading
import weakref

import torch

#: Cached conversions, at most this many (the weights of a model's norms).
MAX_ENTRIES = 1024

_lock = threading.Lock()
# (id(weight), dtype) -> (weakref to weight, version, data_ptr, converted)
_cache: dict[tuple[int, torch.dtype], tuple[weakref.ref, int, int, torch.Tensor]] = {}


def _forget(key: tuple[int, torch.dtype]) -> None:
    with _lock:
        _cache.pop(key, None)


def in_dtype(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """weight itself if it has dtype, else its conversion to dtype on its device (cached)."""
    if weight.dtype == dtype:
        return weight
    key = (id(weight), dtype)
    version, ptr = weight._version, weight.data_ptr()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == version and hit[2] == ptr:
        return hit[3]
    with torch.no_grad():
        converted = weight.detach().to("cpu").to(dtype).to(weight.device)
    with _lock:
        if len(_cache) >= MAX_ENTRIES:
            _cache.clear()
        fresh = key not in _cache
        _cache[key] = (weakref.ref(weight), version, ptr, converted)
    if fresh:
        weakref.finalize(weight, _forget, key)
    return converted


@torch.library.custom_op("spyre_ops::spyre_weight_in_dtype", mutates_args=())
def weight_in_dtype(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` converted to ``dtype`` on its device, once per weight and version (:func:`in_dtype`).

    The op compiled graphs call for a weight of another dtype than x's (a fresh tensor when the
    dtypes already agree: an op's output never aliases its input).
    """
    converted = in_dtype(weight, dtype)
    return converted.clone() if converted is weight else converted


@weight_in_dtype.register_fake
def _weight_in_dtype_fake(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(weight.shape, dtype=dtype, device=weight.device)


#: The op of :func:`weight_in_dtype`, as it appears in graphs.
WEIGHT_IN_DTYPE = torch.ops.spyre_ops.spyre_weight_in_dtype.default


def cached() -> int:
    """How many conversions are cached."""
    with _lock:
        return len(_cache)


def clear() -> None:
    """Drops every cached conversion."""
    with _lock:
        _cache.clear()
