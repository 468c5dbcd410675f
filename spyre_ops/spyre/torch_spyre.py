"""Integration with torch-spyre's compiler: Inductor decompositions of the spyre ops.

In a compiled graph, torch-spyre's Inductor backend must lower the ops rather
than leave them as extern calls: :func:`install` (run at ``import spyre_ops``
when torch-spyre is loaded) registers a decomposition of each op into the Spyre
formula (:mod:`spyre_ops.spyre.formula`), for spyre tensors only (other devices
keep their kernel: the decomposition returns ``NotImplemented``), for every op family
(:mod:`spyre_ops._variants`: the Gemma ops with the formula's ``weight_offset=1.0``).

Where the decompositions must land. torch-spyre builds the table it compiles
with from Inductor's ``select_decomp_table()`` plus its own private table. On
torch 2.13 ``select_decomp_table()`` returns ``fast_random_decomps()``, which is
``functools.cache``-d at the first compile in the process: a decomposition
added to Inductor's global table after that is never seen, and the op silently
stays an extern call. So :func:`install` registers into Inductor's global table,
clears that cache, registers into torch-spyre's own table too (through its
``register_spyre_decompositions``) when it has one, and then *verifies* that
every table the compile is built from holds the decompositions; if not (a
torch or torch-spyre that builds its table differently), it raises.

Each decomposition bakes the current compute dtype into the graph, so it also
adds a Dynamo guard on it (:mod:`spyre_ops.spyre.policy_guard`): a graph
compiled under one compute dtype is recompiled after a change.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._variants import RMS_NORM, VARIANTS, Variant
from . import formula, policy_guard, weights

DEVICE_TYPE = "spyre"
#: torch-spyre's module holding its decomposition table and the function that builds it.
TORCH_SPYRE_DECOMPOSITIONS = "torch_spyre._inductor.decompositions"
_installed = False


def loaded() -> bool:
    """Whether torch-spyre is loaded in this process (it autoloads with ``import torch``)."""
    return "torch_spyre" in sys.modules


def _policy() -> torch.dtype:
    from . import compute_dtype

    return policy_guard.guarded_compute_dtype(compute_dtype())


def _applies(x: torch.Tensor, normalized_shape: Sequence[int]) -> bool:
    """Whether a decomposition takes the call: spyre tensors, last dimension only
    (other devices keep their kernel; the kernel raises the shape error)."""
    return x.device.type == DEVICE_TYPE and len(normalized_shape) == 1


def _laid_out(x: torch.Tensor, policy: torch.dtype) -> torch.Tensor:
    """x, or a dense copy of it (a copy inside the graph, which torch-spyre lays out with a
    restickify) when torch-spyre cannot lay out the formula on x itself:

    * x's last dimension is not its innermost one (stride != 1, e.g. a transposed x of shape
      (8, 128) and strides (1, 8)): the rows' elements do not lie along x's sticks, and the
      formula's row reductions and pointwise ops then fail with "no mechanism to resolve stick
      incompatibility" (torch-spyre's own ``F.rms_norm`` gets the same restickify);
    * x is a strided view that the formula converts to another compute dtype: torch-spyre cannot
      lay out the conversion of such a view (a fp32-policy q-norm view
      ``qkv[..., :4096].view(8, 32, 128)`` of fp16 qkv fails with "Unsupported coordinate
      expression"); the copy of the fp16 view it can.

    Other strided views (rows contiguous in the last dimension, e.g. the q and k views of a fused
    qkv under the fp16 policy) are read where they are."""
    if x.is_contiguous():
        return x
    if x.dim() > 0 and x.shape[-1] > 1 and x.stride(-1) != 1:
        return x.contiguous()
    if formula.compute_dtype_for(x.dtype, policy) == x.dtype:
        return x
    return x.contiguous()


_SIXTEEN_BIT = (torch.float16, torch.bfloat16)
_CONVERSIONS = (torch.ops.prims.convert_element_type.default, torch.ops.aten._to_copy.default)
_ELEMENTWISE = (torch.ops.aten.add, torch.ops.aten.sub, torch.ops.aten.mul, torch.ops.aten.div)


def _traced_node(t: torch.Tensor) -> torch.fx.Node | None:
    """The graph node of t in the graph being traced (Inductor decomposes inside ``make_fx``),
    or None outside a trace."""
    from torch.fx.experimental import proxy_tensor

    mode = proxy_tensor.get_proxy_mode()
    if mode is None:
        return None
    slot = proxy_tensor.get_proxy_slot(t, mode.tracer, None)
    proxy = getattr(slot, "proxy", None)
    return getattr(proxy, "node", None)


def _from_sixteen_bit(node: Any, depth: int = 0) -> bool:
    """Whether ``node`` is a float32 value computed in the graph from a 16-bit tensor: a conversion
    of one, or an elementwise op of such values and scalars (Gemma's ``1 + w.float()``)."""
    if not isinstance(node, torch.fx.Node) or depth > 8 or node.op != "call_function":
        return False
    if node.target in _CONVERSIONS:
        source = node.args[0]
        value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        return isinstance(value, torch.Tensor) and value.dtype in _SIXTEEN_BIT
    if getattr(node.target, "overloadpacket", None) in _ELEMENTWISE:
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        return bool(tensors) and all(_from_sixteen_bit(a, depth + 1) for a in tensors)
    return False


def _weight_for(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
    """The weight the formula gets in a compiled graph.

    torch-spyre cannot combine, in one pointwise op, a tensor converted on the device between
    16-bit and float32 with an unconverted one of the same dtype ("Multi-arg pointwise with mixed
    EA"): each conversion rearranges the elements in their sticks. So a weight of another dtype
    than x's that is a graph input (fp16 x with an fp32 weight, fp32 x with an fp16 one, bf16 x
    with fp32) is converted outside the formula's kernel by :data:`weights.WEIGHT_IN_DTYPE` (an
    extern call, cached per weight and version, as for eager calls). A float32 weight computed in
    the graph from a 16-bit tensor for 16-bit x (vLLM's GemmaRMSNorm hands the op
    ``1 + w.float()``) is converted inside the graph: converting it back to x's dtype restores
    the arrangement x has, and the extern call would convert a fresh tensor on every call.
    """
    if weight is None or weight.dtype == x.dtype:
        return weight
    if x.dtype in _SIXTEEN_BIT and weight.dtype == torch.float32 and _from_sixteen_bit(_traced_node(weight)):
        return weight
    return weights.weight_in_dtype(weight, x.dtype)


def decompositions(variant: Variant) -> dict[str, Callable[..., Any]]:
    """``variant``'s decompositions for spyre tensors, by op name in the plain family
    (``NotImplemented`` for other devices); its weight offset is added in the formula."""
    offset = variant.weight_offset

    def rms_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                 eps: float = variant.eps):
        """Inductor decomposition of ``rms_norm`` for spyre tensors (``NotImplemented`` otherwise)."""
        if not _applies(x, normalized_shape):
            return NotImplemented
        policy = _policy()
        return formula.rms_norm(_laid_out(x, policy), _weight_for(x, weight), eps, policy, weight_offset=offset)

    def fused(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float):
        policy = _policy()
        return formula.fused_add_rms_norm(
            _laid_out(x, policy), _laid_out(residual, policy), _weight_for(x, weight), eps, policy,
            weight_offset=offset,
        )

    def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                           weight: torch.Tensor | None = None, eps: float = variant.eps):
        """Inductor decomposition of ``fused_add_rms_norm`` for spyre tensors."""
        if not _applies(x, normalized_shape):
            return NotImplemented
        return fused(x, residual, weight, eps)

    def fused_add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, normalized_shape: Sequence[int],
                            weight: torch.Tensor | None = None, eps: float = variant.eps):
        """Inductor decomposition of ``fused_add_rms_norm_``: the functional formula, then two copies."""
        if not _applies(x, normalized_shape):
            return NotImplemented
        out, summed = fused(x, residual, weight, eps)
        residual.copy_(summed)
        x.copy_(out)
        return None

    return {"rms_norm": rms_norm, "fused_add_rms_norm": fused_add_rms_norm, "fused_add_rms_norm_": fused_add_rms_norm_}


#: variant -> op -> its decomposition for spyre tensors.
DECOMPOSITIONS_BY_VARIANT = {variant: decompositions(variant) for variant in VARIANTS}
#: op -> its decomposition for spyre tensors (the spyre:: ops).
DECOMPOSITIONS = DECOMPOSITIONS_BY_VARIANT[RMS_NORM]
decompose_rms_norm = DECOMPOSITIONS["rms_norm"]
decompose_fused_add_rms_norm = DECOMPOSITIONS["fused_add_rms_norm"]
decompose_fused_add_rms_norm_ = DECOMPOSITIONS["fused_add_rms_norm_"]


def decomposition_table() -> dict:
    """The decompositions of every op family keyed by op overload, as ``make_fx``/Inductor tables are."""
    return {
        variant.packet(name).default: fn
        for variant, table in DECOMPOSITIONS_BY_VARIANT.items()
        for name, fn in table.items()
    }


def _torch_spyre_decompositions():
    """torch-spyre's decompositions module, or None if it has none (or torch-spyre is not loaded)."""
    if not loaded():
        return None
    try:
        return importlib.import_module(TORCH_SPYRE_DECOMPOSITIONS)
    except ImportError:
        return None


def compile_tables() -> dict[str, Callable[[], dict]]:
    """The decomposition tables a compile of spyre tensors is built from, by name, as builders.

    Inductor's ``select_decomp_table`` always; torch-spyre's ``get_spyre_decomp_table``
    when torch-spyre is loaded.

    Raises:
        RuntimeError: torch-spyre is loaded but has no ``get_spyre_decomp_table``:
            where its compile takes decompositions from is unknown.
    """
    from torch._inductor import decomposition as inductor

    tables: dict[str, Callable[[], dict]] = {"torch._inductor.decomposition.select_decomp_table": inductor.select_decomp_table}
    if loaded():
        module = _torch_spyre_decompositions()
        builder = getattr(module, "get_spyre_decomp_table", None)
        if builder is None:
            raise RuntimeError(
                f"spyre_ops: torch-spyre is loaded but {TORCH_SPYRE_DECOMPOSITIONS}.get_spyre_decomp_table "
                "does not exist, so spyre_ops cannot check that torch-spyre's compile sees its "
                "decompositions (without them spyre::rms_norm and the fused ops would stay extern calls "
                "in compiled graphs). This torch-spyre builds its decomposition table differently from "
                "the one spyre_ops supports."
            )
        tables[f"{TORCH_SPYRE_DECOMPOSITIONS}.get_spyre_decomp_table"] = builder
    return tables


def verify(ours: dict | None = None) -> None:
    """Checks that every table a compile is built from holds our decompositions
    (``ours``: :func:`decomposition_table`, when the caller has it at hand).

    Raises:
        RuntimeError: naming the table and the ops it lacks.
    """
    if ours is None:
        ours = decomposition_table()
    for name, build in compile_tables().items():
        table = build()
        missing = [str(op) for op, fn in ours.items() if table.get(op) is not fn]
        if missing:
            raise RuntimeError(
                f"spyre_ops: the decomposition table a torch.compile of spyre tensors uses ({name}()) "
                f"lacks the decompositions of {', '.join(missing)}, even after spyre_ops registered them; "
                "compiled graphs would call these ops as extern kernels instead of lowering them. "
                "This torch/torch-spyre builds or caches its table in a way spyre_ops does not support."
            )


def _clear_cached_tables() -> None:
    """Drops Inductor's cached default table (torch 2.13: ``fast_random_decomps``), so it is rebuilt with ours."""
    from torch._inductor import decomposition as inductor

    for name in ("fast_random_decomps", "select_decomp_table"):
        cache_clear = getattr(getattr(inductor, name, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


def install() -> None:
    """Registers the decompositions where torch-spyre's compile looks, then verifies it. Idempotent.

    Raises:
        RuntimeError: if a table the compile uses does not hold them afterwards (see :func:`verify`).
    """
    global _installed
    ours = decomposition_table()
    if not _installed:
        from torch._inductor.decomposition import register_decomposition

        for op, fn in ours.items():
            register_decomposition([op])(fn)
        module = _torch_spyre_decompositions()
        register_spyre = getattr(module, "register_spyre_decompositions", None)
        if register_spyre is not None:
            for op, fn in ours.items():
                register_spyre([op])(fn)
        _installed = True
    _clear_cached_tables()
    verify(ours)
