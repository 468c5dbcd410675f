"""vLLM integration: the ``"spyre"`` provider of vLLM IR's RMSNorm ops.

vLLM IR (``vllm.ir``, vLLM 0.32 to 0.34) lets a package add *providers* to an
IR op. :func:`register` adds a provider named ``"spyre"`` to

* ``vllm.ir.ops.rms_norm``: its body is one call of ``torch.ops.spyre.rms_norm``
  (made through :func:`spyre_ops.rms_norm`, cheaper per call in eager mode);
* ``vllm.ir.ops.fused_add_rms_norm``: an in-place provider whose body is one call
  of ``torch.ops.spyre.fused_add_rms_norm_``, made through
  :func:`spyre_ops.fused_add_rms_norm_` (it writes the output into ``x`` and
  ``x + x_residual`` into ``x_residual`` and returns those two tensors; vLLM
  clones the activations first when the functional overload is called).

Because the body is a single library op, vLLM's IR lowering pass traces it into
the compiled graph as one ``spyre.*`` node, and the same op runs in eager mode.

The package declares the ``vllm.general_plugins`` entry point ``spyre_ops =
spyre_ops.vllm:register``, so vLLM registers the provider in every process it
starts; a platform registers it in its ``import_ir_kernels()`` with
:func:`import_ir_kernels` and selects it with :func:`get_default_ir_op_priority`,
a user with ``kernel_config={"ir_op_priority": {"rms_norm": "spyre,native", ...}}``.

vLLM 0.33 marks vLLM IR deprecated ("will be removed in v0.34.0"), but 0.34.0
still has it, unchanged. Without it (or without vLLM at all) importing this
module still works and :func:`register` returns ``False`` after logging why.

vLLM's ``GemmaRMSNorm`` hands the IR ops a float32 ``1 + w`` made on every call,
and the Transformers backend's and the hw-agnostic layers are classes of their
own: :func:`register_oot_layers` (module :mod:`spyre_ops.vllm_layers`) replaces
each of those layers with a subclass that calls the library ops, the Gemma op
with the raw weight (``register_oot``, the route that does not need vLLM IR).
"""

import logging
import os
from typing import Any

import torch
from torch import Tensor

import spyre_ops  # makes torch.ops.spyre.* exist; spyre_ops.spyre: the compute dtype

__all__ = [
    "PROVIDER",
    "SUPPORTED_DEVICE_TYPES",
    "OOT_LAYERS_ENV",
    "default_ir_op_priority",
    "get_default_ir_op_priority",
    "has_kernel",
    "import_ir_kernels",
    "is_registered",
    "register",
    "register_oot_layers",
    "register_oot_rms_norm",
    "rms_norm_supports_args",
    "fused_add_rms_norm_supports_args",
]

logger = logging.getLogger(__name__)

#: The provider name under which the ops are registered with vLLM IR.
PROVIDER = "spyre"

#: Device types the library has kernels for.
SUPPORTED_DEVICE_TYPES = frozenset({"cpu", "spyre"})

_FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})

#: Set to ``1`` in the environment, :func:`register` (the ``vllm.general_plugins``
#: entry point, run in every vLLM process) also calls :func:`register_oot_layers`.
OOT_LAYERS_ENV = "SPYRE_OPS_VLLM_OOT_LAYERS"

#: Why the last :func:`register` call did not register (``None`` after a success).
reason_not_registered: str | None = None


# ---------------------------------------------------------------------------
# Argument checks (vLLM calls them on every dispatch: keep them cheap).
# Their parameters must match the native op's names and defaults exactly.
# ---------------------------------------------------------------------------


def _weight_ok(x: Tensor, weight: Tensor | None) -> bool:
    if weight is None:
        return True
    # Native computes ``x.to(weight.dtype) * weight``: the library's single
    # rounding matches that when the weight has x's dtype or is float32.
    return (
        isinstance(weight, Tensor)
        and weight.device == x.device
        and (weight.dtype == x.dtype or weight.dtype == torch.float32)
        and weight.dim() == 1
        and weight.shape[0] == x.shape[-1]
    )


#: (op, device type) pairs found to have a kernel; only positive answers are
#: kept, as a kernel may be registered later (the Spyre kernels, by torch-spyre).
_kernel_found: set[tuple[str, str]] = {
    ("spyre::rms_norm", "cpu"),
    ("spyre::fused_add_rms_norm_", "cpu"),
}


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``op`` (e.g. ``"spyre::rms_norm"``) can run on ``device_type``:
    one of :data:`SUPPORTED_DEVICE_TYPES` with a kernel (direct or composite)
    for its dispatch key (``spyre`` is PyTorch's PrivateUse1 device)."""
    if (op, device_type) in _kernel_found:
        return True
    if device_type not in SUPPORTED_DEVICE_TYPES:
        return False
    key = "PrivateUse1" if device_type == "spyre" else device_type.upper()
    try:
        found = torch._C._dispatch_has_computed_kernel_for_dispatch_key(op, key)
    except RuntimeError:  # no such operator (yet)
        return False
    if found:
        _kernel_found.add((op, device_type))
    return found


def _activation_ok(x: Any, op: str) -> bool:
    return (
        isinstance(x, Tensor)
        and x.dtype in _FLOAT_DTYPES
        and x.dim() >= 1
        and has_kernel(op, x.device.type)
        and not (x.device.type == "spyre" and not _spyre_meets_dtype(x.dtype))
    )


def _needs_grad(*tensors: Any) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _spyre_meets_dtype(dtype: torch.dtype) -> bool:
    # The Spyre kernels compute float32 input in fp16 unless the compute dtype is
    # float32 (spyre_ops.spyre.set_compute_dtype): fp16 accuracy is not vLLM's
    # float32 tolerance, so such calls are left to the next provider.
    return dtype != torch.float32 or spyre_ops.spyre.compute_dtype() == torch.float32


def rms_norm_supports_args(
    x: Tensor, weight: Tensor | None, epsilon: float, variance_size: int | None = None
) -> bool:
    """Whether the spyre provider serves these ``rms_norm`` arguments: a float
    ``x`` on a device the library has a kernel for (cpu; spyre once its kernel
    is registered; on spyre, float32 only with the float32 compute dtype), a
    matching (or absent) weight, no ``variance_size``."""
    return (
        variance_size is None and _activation_ok(x, "spyre::rms_norm") and _weight_ok(x, weight)
    )


def fused_add_rms_norm_supports_args(
    x: Tensor,
    x_residual: Tensor,
    weight: Tensor | None,
    epsilon: float,
    variance_size: int | None = None,
) -> bool:
    """Whether the spyre provider serves these ``fused_add_rms_norm`` arguments:
    as :func:`rms_norm_supports_args`, with ``x_residual`` of ``x``'s shape,
    dtype and device. The provider works in place, which autograd cannot
    differentiate: with grad mode on, arguments that require grad are left to
    the next provider (the kernel would refuse them)."""
    return (
        variance_size is None
        and not _needs_grad(x, x_residual, weight)
        and _activation_ok(x, "spyre::fused_add_rms_norm_")
        and isinstance(x_residual, Tensor)
        and x_residual.dtype == x.dtype
        and x_residual.device == x.device
        and x_residual.shape == x.shape
        and _weight_ok(x, weight)
    )


# ---------------------------------------------------------------------------
# Provider bodies: one library op each, same signature as vLLM's native impls.
# ---------------------------------------------------------------------------


def spyre_rms_norm(
    x: Tensor, weight: Tensor | None, epsilon: float, variance_size: int | None = None
) -> Tensor:
    """``vllm.ir.ops.rms_norm`` served by ``torch.ops.spyre.rms_norm`` (through
    :func:`spyre_ops.rms_norm`: the same op, cheaper per call in eager mode)."""
    return spyre_ops.rms_norm(x, [x.shape[-1]], weight, epsilon)


def spyre_fused_add_rms_norm(
    x: Tensor,
    x_residual: Tensor,
    weight: Tensor | None,
    epsilon: float,
    variance_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``vllm.ir.ops.fused_add_rms_norm`` served in place by
    ``torch.ops.spyre.fused_add_rms_norm_`` (through :func:`spyre_ops.fused_add_rms_norm_`): returns ``(x, x_residual)`` after
    writing the normalized output into ``x`` and ``x + x_residual`` into ``x_residual``.

    Under torch.compile the raw op goes into vLLM's graph, not the wrapper's overlap check
    op (one more dispatcher call per norm and step): x and x_residual are vLLM's own
    buffers, which never overlap."""
    if torch.compiler.is_compiling():
        torch.ops.spyre.fused_add_rms_norm_(x, x_residual, [x.shape[-1]], weight, epsilon)
    else:
        spyre_ops.fused_add_rms_norm_(x, x_residual, [x.shape[-1]], weight, epsilon)
    return x, x_residual


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


def _import_ir() -> Any:
    """``vllm.ir`` if it can be imported, else ``None`` with the reason recorded."""
    global reason_not_registered
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        reason_not_registered = f"vLLM is not installed ({e})"
        return None
    try:
        from vllm import ir
    except ImportError as e:
        version = getattr(vllm, "__version__", "unknown")
        reason_not_registered = (
            f"vLLM {version} has no vLLM IR (vllm.ir: {e}); vLLM IR exists in 0.32 to "
            "0.34. Use spyre_ops.vllm.register_oot_layers() instead."
        )
        return None
    if not all(hasattr(ir.ops, name) for name in ("rms_norm", "fused_add_rms_norm")):
        reason_not_registered = "this vLLM IR has no rms_norm/fused_add_rms_norm ops"
        return None
    return ir


_PROVIDERS = (
    # (IR op name, provider body, supports_args, inplace)
    ("rms_norm", spyre_rms_norm, rms_norm_supports_args, False),
    ("fused_add_rms_norm", spyre_fused_add_rms_norm, fused_add_rms_norm_supports_args, True),
)


def is_registered() -> bool:
    """Whether vLLM IR's ops carry this package's ``"spyre"`` providers."""
    try:
        from vllm import ir
    except ImportError:
        return False
    for name, body, _, _ in _PROVIDERS:
        impl = getattr(ir.ops, name).impls.get(PROVIDER)
        if impl is None or impl.impl_fn is not body:
            return False
    return True


def register() -> bool:
    """Register the ``"spyre"`` providers of ``vllm.ir.ops.rms_norm`` and
    ``vllm.ir.ops.fused_add_rms_norm``.

    Idempotent: calling it again (vLLM calls it in every process through the
    ``vllm.general_plugins`` entry point) changes nothing. It selects nothing:
    the providers run only where the IR op priority lists ``"spyre"``. With
    ``SPYRE_OPS_VLLM_OOT_LAYERS=1`` in the environment it also calls
    :func:`register_oot_layers` (so that every vLLM process builds the library's
    norm layers, the Gemma ones included; a ``RuntimeError`` from there propagates).

    Returns:
        ``True`` when the providers are registered (by this call or an earlier
        one); ``False`` when vLLM or vLLM IR is missing, or another package
        already registered a provider named ``"spyre"``. The reason is logged
        (warning) and kept in :data:`reason_not_registered`.
    """
    global reason_not_registered
    if os.environ.get(OOT_LAYERS_ENV) == "1":
        register_oot_layers()
    ir = _import_ir()
    if ir is None:
        logger.warning("spyre_ops: vLLM IR provider not registered: %s", reason_not_registered)
        return False

    # Check every op before registering any, so that a conflict registers nothing.
    for name, body, _, _ in _PROVIDERS:
        existing = getattr(ir.ops, name).impls.get(PROVIDER)
        if existing is not None and existing.impl_fn is not body:
            reason_not_registered = (
                f"vllm.ir.ops.{name} already has a provider named {PROVIDER!r}, "
                f"from {getattr(existing.impl_fn, '__module__', '?')}"
            )
            logger.warning("spyre_ops: vLLM IR provider not registered: %s", reason_not_registered)
            return False
    for name, body, supports_args, inplace in _PROVIDERS:
        op = getattr(ir.ops, name)
        if PROVIDER in op.impls:
            continue
        op.register_impl(PROVIDER, supported=True, supports_args=supports_args, inplace=inplace)(
            body
        )
        logger.debug("spyre_ops: registered provider %r for vllm.ir.ops.%s", PROVIDER, name)
    reason_not_registered = None
    return True


def import_ir_kernels() -> None:
    """What a platform's ``import_ir_kernels()`` calls (vLLM 0.32 to 0.34, a
    classmethod there without arguments): registers the spyre providers, raising
    ``RuntimeError`` with the reason when it cannot (no vLLM IR, a name conflict).

    A platform keeps vLLM's own kernels too::

        @classmethod
        def import_ir_kernels(cls) -> None:
            import vllm.kernels  # noqa: F401
            spyre_ops.vllm.import_ir_kernels()
    """
    if not register():
        raise RuntimeError(f"spyre_ops: cannot register the spyre IR provider: {reason_not_registered}")


def default_ir_op_priority(vllm_config: Any = None) -> Any:
    """An ``IrOpPriorityConfig`` for a platform's ``get_default_ir_op_priority``:
    ``["spyre", "native"]`` for ``rms_norm`` and ``fused_add_rms_norm``,
    ``["native"]`` for every other IR op.

    ``vllm_config`` is accepted (and unused) so a platform can forward its own
    argument. Registers the providers first; raises ``RuntimeError`` when that
    is impossible (no vLLM IR).
    """
    if not register():
        raise RuntimeError(f"spyre_ops: cannot use the spyre IR provider: {reason_not_registered}")
    from vllm.config.kernel import IrOpPriorityConfig

    priority = [PROVIDER, "native"]
    return IrOpPriorityConfig.with_default(
        ["native"], **{name: list(priority) for name, _, _, _ in _PROVIDERS}
    )


def get_default_ir_op_priority(vllm_config: Any) -> Any:
    """A platform's ``get_default_ir_op_priority(cls, vllm_config)`` (the same
    signature in vLLM 0.32 to 0.34, which returns an ``IrOpPriorityConfig``):
    :func:`default_ir_op_priority` of ``vllm_config``::

        @classmethod
        def get_default_ir_op_priority(cls, vllm_config):
            return spyre_ops.vllm.get_default_ir_op_priority(vllm_config)
    """
    return default_ir_op_priority(vllm_config)


# ---------------------------------------------------------------------------
# The route without vLLM IR: out-of-tree layers (spyre_ops.vllm_layers)
# ---------------------------------------------------------------------------


def register_oot_layers(only: tuple[str, ...] | None = None) -> dict[str, type]:
    """Register the library's classes for vLLM's norm layers with ``register_oot``:
    ``RMSNorm``, ``GemmaRMSNorm`` (through ``torch.ops.spyre_ops.gemma_rms_norm``
    with the raw weight), the Transformers backend's ``TPAwareRMSNorm`` /
    ``TPAwareGemmaRMSNorm`` and the hw-agnostic ``RMSNorm``; see
    :func:`spyre_ops.vllm_layers.register_oot_layers`."""
    from spyre_ops.vllm_layers import register_oot_layers as register_layers

    return register_layers(only)


def register_oot_rms_norm() -> type:
    """Opt in to the out-of-tree ``RMSNorm`` layers only (works with or without
    vLLM IR): :func:`register_oot_layers` with ``only=("RMSNorm",)``; returns the
    class registered for ``vllm.model_executor.layers.layernorm.RMSNorm``, whose
    ``forward_oot`` calls ``torch.ops.spyre.rms_norm`` /
    ``torch.ops.spyre.fused_add_rms_norm`` (``variance_size`` falls back to
    ``forward_native``). Idempotent; ``RuntimeError`` if vLLM is missing or another
    class is already registered as ``RMSNorm``."""
    return register_oot_layers(("RMSNorm",))["vllm.model_executor.layers.layernorm.RMSNorm"]
