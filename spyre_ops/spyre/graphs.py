"""Eager calls on spyre tensors as one compiled graph of the whole formula.

torch-spyre runs every eager aten op on a spyre tensor as its own compiled
kernel and device launch; the formula has about twenty ops. So the eager
kernels (:mod:`spyre_ops.spyre.kernels`) instead trace the formula into an
aten graph (``make_fx`` on fake tensors: nothing runs on the device while
tracing), hand that graph to the *graph compiler* once per signature (op,
shapes, strides, dtypes, weight presence, eps, compute dtype, weight offset), and cache what
it returns. A call with a known signature is one launch of a cached graph.
The traced graph names no size (every reduction is over the last dim), so one
trace serves every shape: a new shape costs a copy of the graph module, not a
new trace.

The graph compiler is the seam between this package and the device:

* with torch-spyre loaded, :func:`torch_compile`: ``torch.compile(graph.forward,
  dynamic=False, fullgraph=True)``, which on spyre tensors is torch-spyre's
  Inductor backend. Each signature has a graph module of its own (its own code
  object), so signatures never share, or exhaust, one Dynamo cache entry;
* on the emulated device, :mod:`spyre_ops.emulator` installs its stand-in
  (which counts compiles and launches) with :func:`set_graph_compiler`;
* otherwise, :func:`replay`: the traced graph runs as it is.

The formula is plain aten ops: the compiled graph never dispatches back into a
spyre op.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from . import formula

#: Compiles an aten graph for the given example inputs; returns what runs it.
GraphCompiler = Callable[[torch.fx.GraphModule, Sequence[torch.Tensor]], Callable[..., Any]]

#: How many compiled graphs are kept (least recently used dropped first).
MAX_GRAPHS = 512

_lock = threading.Lock()
# Held while a graph is traced and compiled: make_fx (and torch.compile) keep
# global state while they run and are not thread-safe, so a cache miss builds
# under this lock, after checking the cache again (each signature is built once).
_build_lock = threading.RLock()
_graphs: OrderedDict[tuple, Callable[..., Any]] = OrderedDict()
_traces: dict[tuple, torch.fx.GraphModule] = {}
_compiler: GraphCompiler | None = None


#: Input layouts torch-spyre's compiler front end (2026-08 snapshot) is known to reject for the formula:
#: a tensor converted on the device between 16-bit and float32 meets a per-row tensor whose
#: candidate layouts include one it cannot broadcast (docs/spyre-path.md, "Compiling on torch-spyre").
KNOWN_COMPILE_LIMITS = (
    "torch-spyre's compiler rejects some mixes of 16-bit and float32 tensors in the formula "
    "(seen: 2-D float16/bfloat16 x of 64 or more rows, a multiple of 32, under the float32 compute "
    "dtype, and float32 x of 32 or 64 rows under the float16 compute dtype). What compiles: "
    "the float16 compute dtype for float16/bfloat16 x (the default, spyre_ops.spyre."
    "set_compute_dtype(torch.float16)), the float32 compute dtype for float32 x "
    "(spyre_ops.spyre.set_compute_dtype(torch.float32)), or x converted to float16 first"
)


def _explained(compiled: Callable[..., Any], example_inputs: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """``compiled``, whose compile errors (raised at its first call) name the call and what compiles."""
    from torch._dynamo.exc import BackendCompilerFailed

    described = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in example_inputs)

    def run(*args: Any) -> Any:
        try:
            return compiled(*args)
        except BackendCompilerFailed as error:
            from . import compute_dtype

            raise RuntimeError(
                f"spyre_ops: torch-spyre could not compile the Spyre RMSNorm graph for inputs {described} "
                f"under compute dtype {compute_dtype()}: {str(error).strip().splitlines()[0][:500]}. "
                f"{KNOWN_COMPILE_LIMITS}."
            ) from error

    return run


def torch_compile(graph: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """torch-spyre's compile: ``torch.compile(graph.forward, dynamic=False, fullgraph=True)`` (Inductor).

    The graph's own ``forward`` is compiled (not the module, whose ``__call__``
    code all modules share), so each signature has Dynamo cache entries of its own.
    A compile error (raised at the first call) is re-raised as a ``RuntimeError`` that names
    the inputs, the compute dtype and the layouts known to compile (:data:`KNOWN_COMPILE_LIMITS`).
    """
    return _explained(torch.compile(graph.forward, dynamic=False, fullgraph=True), example_inputs)


def replay(graph: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """No compile: the traced aten graph runs op by op."""
    return graph


def _default_compiler() -> GraphCompiler:
    from . import torch_spyre

    return torch_compile if torch_spyre.loaded() else replay


def graph_compiler() -> GraphCompiler:
    """The graph compiler in use (see the module docstring)."""
    return _compiler if _compiler is not None else _default_compiler()


def set_graph_compiler(compiler: GraphCompiler | None) -> GraphCompiler | None:
    """Sets the graph compiler (``None``: the default) and drops the cached graphs; returns the previous one."""
    global _compiler
    with _lock:
        previous, _compiler = _compiler, compiler
        _graphs.clear()
        _traces.clear()
    return previous


def clear() -> None:
    """Drops every cached graph and trace."""
    with _lock:
        _graphs.clear()
        _traces.clear()


def cached_signatures() -> list[tuple]:
    """The signatures with a cached graph, least recently used first."""
    with _lock:
        return list(_graphs)


_FORMULAS = {"rms_norm": formula.rms_norm_rows, "fused_add_rms_norm": formula.fused_add_rms_norm_rows}


def _signature(kind: str, tensors: Sequence[torch.Tensor], eps: float, policy: torch.dtype,
               weight_offset: float) -> tuple:
    shapes = tuple((tuple(t.shape), t.dtype, tuple(t.stride()), t.device) for t in tensors)
    return (kind, shapes, float(eps), policy, float(weight_offset))


def _trace(kind: str, tensors: Sequence[torch.Tensor], has_weight: bool, eps: float,
           policy: torch.dtype, weight_offset: float) -> torch.fx.GraphModule:
    """The formula's aten graph for these dtypes, eps, policy and weight offset (traced once,
    for any shape). ``tensors``: x, the residual for the fused kind, then the weight when there is one."""
    key = (kind, tuple(t.dtype for t in tensors), has_weight, float(eps), policy, float(weight_offset))
    with _lock:
        traced = _traces.get(key)
    if traced is None:
        no_weight = {} if has_weight else {"weight": None}
        fn = functools.partial(_FORMULAS[kind], **no_weight, eps=eps, policy=policy, weight_offset=weight_offset)
        traced = make_fx(fn, tracing_mode="fake")(*tensors)
        for node in traced.graph.nodes:
            node.meta.pop("val", None)  # the shapes of one trace; the graph itself names none
            node.meta.pop("tensor_meta", None)
        with _lock:
            if len(_traces) >= MAX_GRAPHS:
                _traces.clear()
            _traces[key] = traced
    # A module of its own (its own generated forward) for each signature.
    return torch.fx.GraphModule(traced, traced.graph)


def _build(key: tuple, kind: str, tensors: Sequence[torch.Tensor], has_weight: bool, eps: float,
           policy: torch.dtype, weight_offset: float) -> Callable[..., Any]:
    """The compiled graph of signature ``key``: traced and compiled once, one build at a time."""
    with _build_lock:
        with _lock:
            compiled = _graphs.get(key)  # built by another thread while this one waited
        if compiled is not None:
            return compiled
        with torch.no_grad():
            graph = _trace(kind, tensors, has_weight, eps, policy, weight_offset)
            compiled = graph_compiler()(graph, tensors)
        with _lock:
            _graphs[key] = compiled
            while len(_graphs) > MAX_GRAPHS:
                _graphs.popitem(last=False)
        return compiled


def run(kind: str, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor | None,
        eps: float, policy: torch.dtype, weight_offset: float = 0.0) -> Any:
    """Runs formula ``kind`` ("rms_norm" or "fused_add_rms_norm") on 2-D x as one cached compiled
    graph, the weight offset by ``weight_offset`` (Gemma: 1.0) inside the graph."""
    tensors = [t for t in (x, residual, weight) if t is not None]
    key = _signature(kind, tensors, eps, policy, weight_offset)
    with _lock:
        compiled = _graphs.get(key)
        if compiled is not None:
            _graphs.move_to_end(key)
    if compiled is None:
        compiled = _build(key, kind, tensors, weight is not None, eps, policy, weight_offset)
    with torch.no_grad():
        return compiled(*tensors)
