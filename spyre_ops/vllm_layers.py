"""vLLM's norm layers served by the library ops, registered with ``register_oot``.

vLLM builds a layer class through ``CustomOp.__new__``, which looks the class
*name* up in its registry of out-of-tree classes. :func:`register_oot_layers`
registers there, for each entry of :data:`LAYERS` that this vLLM has, a subclass
of vLLM's class whose

* ``forward_oot`` (what vLLM calls on an out-of-tree platform such as Spyre when
  the layer is enabled as a custom op) makes one library call per norm:
  ``torch.ops.spyre.rms_norm`` / ``fused_add_rms_norm`` for ``RMSNorm``, and
  ``torch.ops.spyre_ops.gemma_rms_norm`` / ``gemma_fused_add_rms_norm`` with the
  layer's raw weight for ``GemmaRMSNorm`` (the kernel applies ``1 + w``: no
  float32 ``1 + w`` tensor is made per call);
* for the Gemma layers, also ``forward_native`` (what vLLM's CPU and CUDA
  platforms call): vLLM's own hands ``vllm.ir.ops.rms_norm`` a float32 ``1 + w``
  made on every call; where the IR op's priority starts with the ``"spyre"``
  provider, this one calls the Gemma op with the raw weight instead (the same
  provider choice, without the extra tensor), and is vLLM's otherwise. The
  ``RMSNorm`` layers' ``forward_native`` stays vLLM's, whose IR op reaches the
  spyre provider by priority alone.

Arguments the library does not serve (``variance_size``, a weight of another
dtype or device) fall back to vLLM's ``forward_native``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

from torch import Tensor

import spyre_ops
from spyre_ops.vllm import PROVIDER, _activation_ok, _weight_ok

__all__ = ["LAYERS", "Layer", "register_oot_layers", "registered_layers"]


@dataclass(frozen=True)
class Layer:
    """One vLLM norm class the library serves."""

    name: str  #: the class name vLLM looks up in its out-of-tree registry
    module: str  #: where vLLM defines it
    weight_offset: float  #: 0.0: ``w * x_hat``; 1.0: Gemma's ``(1 + w) * x_hat``


_LAYERNORM = "vllm.model_executor.layers.layernorm"
_TRANSFORMERS = "vllm.model_executor.models.transformers.fusers.rms_norm"
_HW_AGNOSTIC = "vllm.model_executor.hw_agnostic.layers.layernorm"

#: Every vLLM norm layer :func:`register_oot_layers` replaces. The Transformers
#: backend's classes subclass whichever ``RMSNorm`` / ``GemmaRMSNorm`` its
#: ``layers`` module resolved (the hw-agnostic one under ``VLLM_USE_HW_AGNOSTIC=1``)
#: and are looked up by their own names; the hw-agnostic ``RMSNorm`` has a
#: registry of its own (``hw_agnostic.custom_op``), so it is an entry of its own.
LAYERS: tuple[Layer, ...] = (
    Layer("RMSNorm", _LAYERNORM, 0.0),
    Layer("GemmaRMSNorm", _LAYERNORM, 1.0),
    Layer("TPAwareRMSNorm", _TRANSFORMERS, 0.0),
    Layer("TPAwareGemmaRMSNorm", _TRANSFORMERS, 1.0),
    Layer("RMSNorm", _HW_AGNOSTIC, 0.0),
)

#: (module, name) -> the registered subclass, once registered.
_registered: dict[tuple[str, str], type] = {}


def _ops(weight_offset: float) -> tuple[Any, Any]:
    """(plain, fused functional) library entry points of this weight convention."""
    if weight_offset == 0.0:
        return spyre_ops.rms_norm, spyre_ops.fused_add_rms_norm
    return spyre_ops.gemma_rms_norm, spyre_ops.gemma_fused_add_rms_norm


#: weight offset -> (plain op, fused op) whose kernels must exist for the device
_KERNEL_OPS = {
    0.0: ("spyre::rms_norm", "spyre::fused_add_rms_norm"),
    1.0: ("spyre_ops::gemma_rms_norm", "spyre_ops::gemma_fused_add_rms_norm"),
}


def _library_serves(
    layer: Any, x: Tensor, residual: Tensor | None, weight: Tensor | None, weight_offset: float
) -> bool:
    if getattr(layer, "variance_size_override", None) is not None:
        return False
    op = _KERNEL_OPS[weight_offset][residual is not None]
    if not (_activation_ok(x, op) and _weight_ok(x, weight)):
        return False
    return residual is None or (
        isinstance(residual, Tensor)
        and residual.dtype == x.dtype
        and residual.device == x.device
        and residual.shape == x.shape
    )


class _LibraryNorm:
    """Mixin: ``forward_oot`` through the library op of the class's weight convention."""

    _spyre_weight_offset: float = 0.0

    def _spyre_weight(self) -> Tensor | None:
        return self.weight.data if getattr(self, "has_weight", True) else None

    def _spyre_forward(
        self, x: Tensor, residual: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor] | None:
        """The library call, or ``None`` if the library does not serve these arguments."""
        weight = self._spyre_weight()
        if not _library_serves(self, x, residual, weight, self._spyre_weight_offset):
            return None
        plain, fused = _ops(self._spyre_weight_offset)
        if residual is None:
            return plain(x, [x.shape[-1]], weight, self.variance_epsilon)
        return fused(x, residual, [x.shape[-1]], weight, self.variance_epsilon)

    def forward_oot(
        self, x: Tensor, residual: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        out = self._spyre_forward(x, residual)
        return self.forward_native(x, residual) if out is None else out


def _spyre_first(op_name: str) -> bool:
    """Whether vLLM IR's ``op_name`` has the spyre provider first in its priority."""
    from vllm import ir

    priority = getattr(ir.ops, op_name).get_priority()
    return bool(priority) and priority[0] == PROVIDER


class _GemmaLibraryNorm(_LibraryNorm):
    """Mixin for the Gemma layers: ``forward_native`` follows vLLM IR's choice of
    the spyre provider, with the raw weight."""

    _spyre_weight_offset = 1.0

    def forward_native(
        self, x: Tensor, residual: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        if _spyre_first("rms_norm" if residual is None else "fused_add_rms_norm"):
            out = self._spyre_forward(x, residual)
            if out is not None:
                return out
        return super().forward_native(x, residual)  # type: ignore[misc]


def _registry(cls: type) -> tuple[dict[str, type], Any]:
    """The out-of-tree registry and the ``CustomOp`` base that ``cls`` is built through."""
    for base in cls.__mro__:
        if base.__name__ == "CustomOp" and hasattr(base, "register_oot"):
            return sys.modules[base.__module__].op_registry_oot, base
    raise RuntimeError(f"spyre_ops: {cls.__module__}.{cls.__name__} is not a vLLM CustomOp")


def _register(layer: Layer, base: type) -> type:
    registry, custom_op = _registry(base)
    key = (layer.module, layer.name)
    cls = _registered.get(key)
    if cls is None or not issubclass(cls, base):
        mixin = _GemmaLibraryNorm if layer.weight_offset == 1.0 else _LibraryNorm
        cls = type(
            f"Spyre{layer.name}",
            (mixin, base),
            {"__doc__": f"vLLM's ``{layer.name}`` ({layer.module}) served by spyre_ops "
                        "(see spyre_ops.vllm_layers)", "__module__": __name__},
        )
        _registered[key] = cls
    existing = registry.get(layer.name)
    if existing is None:
        custom_op.register_oot(name=layer.name)(cls)
    elif existing is not cls:
        raise RuntimeError(
            f"spyre_ops: another out-of-tree {layer.name} is already registered with vLLM "
            f"({existing.__module__}.{existing.__qualname__}); register_oot_layers() needs "
            f"the name free (pass only= the layers it should take)"
        )
    return cls


def register_oot_layers(only: tuple[str, ...] | None = None) -> dict[str, type]:
    """Register the library's classes for vLLM's norm layers (see :data:`LAYERS`).

    Args:
        only: names of the entries to register (e.g. ``("RMSNorm",)``); all by default.

    Returns:
        ``{"<module>.<name>": class}`` for every entry this vLLM has (an entry whose
        module or class this vLLM lacks is left out).

    Idempotent. vLLM builds the registered classes only for layers made after this
    call (call it before the model is built: in a platform plugin, or through the
    ``vllm.general_plugins`` entry point with ``SPYRE_OPS_VLLM_OOT_LAYERS=1``). The
    classes carry the registered name (``"RMSNorm"``, ``"GemmaRMSNorm"``, ...), which
    is what ``compilation_config.custom_ops`` enables (``"+GemmaRMSNorm"``, or
    ``"all"``). Raises ``RuntimeError`` if vLLM cannot be imported or another class
    holds one of the names.
    """
    try:
        importlib.import_module(_LAYERNORM)
    except ImportError as e:
        raise RuntimeError(f"spyre_ops: vLLM's norm layers cannot be imported: {e}") from e
    unknown = set(only or ()) - {layer.name for layer in LAYERS}
    if unknown:
        raise RuntimeError(
            f"spyre_ops: register_oot_layers(only=...) got unknown layer names {sorted(unknown)}; "
            f"known: {sorted({layer.name for layer in LAYERS})}"
        )
    done = {}
    for layer in LAYERS:
        if only is not None and layer.name not in only:
            continue
        try:
            base = getattr(importlib.import_module(layer.module), layer.name)
        except (ImportError, AttributeError):
            continue  # not in this vLLM
        done[f"{layer.module}.{layer.name}"] = _register(layer, base)
    return done


def registered_layers() -> dict[str, type]:
    """``{"<module>.<name>": class}`` of the classes this module registered so far."""
    return {f"{m}.{n}": cls for (m, n), cls in _registered.items()}
