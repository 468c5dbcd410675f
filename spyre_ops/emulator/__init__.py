"""An emulated spyre device: a test instrument for the Spyre kernels of spyre_ops.

torch-spyre cannot be installed outside IBM's stack, so this package ships a
stand-in: PyTorch's PrivateUse1 device, renamed ``"spyre"`` as torch-spyre
renames it, whose memory is host memory (its own extension module,
``spyre_ops.emulator._C``; the main library never loads it). Ops with a
PrivateUse1 kernel (the spyre ops, a few memory and view ops) run as such;
every other op on spyre tensors runs on the CPU through a fallback that
records its name.

It also stands in for torch-spyre's compile of the graphs the Spyre kernels
run (:mod:`spyre_ops.spyre.graphs`): :func:`compile_graph` counts each compile
and returns a launcher that replays the aten graph on the device and counts
the launch, attributing the ops it runs to the graph. :func:`transfers` then
tells eager ops (each one its own compile and launch on torch-spyre) from ops
inside launched graphs.

What it proves: that the ops dispatch to their Spyre kernels, that a call keeps
its tensors on the device (no host<->device copy, no op outside the list of
ops torch-spyre runs on the device), that an eager call is one launch of a
graph compiled once per signature, the numerics of the Spyre formula as
computed in the device's number format, and that the ops trace under
``torch.compile``. What it cannot prove: speed, the Spyre hardware's own
rounding inside an op (its kernels' approximations), or that torch-spyre's
compiler accepts each op for every shape. Those need a Spyre card.

Number format: as on Spyre, float16 and bfloat16 tensors live on the device as
SEN169 (DLFloat16: 1 sign, 6 exponent, 9 mantissa bits; largest finite
~8.57e9, smallest nonzero ~4.7e-10, one NINF code for NaN and Inf) and float32
as IEEE fp32 (``csrc/emulator/sen169.h``). Host->device copies encode (round
half away from zero; fp16 subnormals arrive halved, as torch-spyre's tests
record for the device); device->host copies decode and round to IEEE (fp16
beyond 65504: Inf; NINF: NaN; bf16: nearest even), so ``.cpu()``, ``.item()``
and printing show IEEE values; ``t.to(torch.float32)`` on the device keeps
SEN169's range. Every op on spyre tensors decodes its 16-bit inputs, runs on
the CPU in fp32 and rounds each 16-bit output once to SEN169. Assumed, since
public sources say no more: products and reductions accumulate in fp32 with
one rounding per op output: no public source states the device's accumulator
width; fp32 is its other native format, and at row lengths up to 8192 an fp32
sum's error stays far below SEN169's 2**-10, so a wider one would not differ. See docs/spyre-path.md, "SEN169".

Usage::

    import spyre_ops.emulator as emulator
    emulator.enable()                      # once per process
    x = torch.randn(4, 64).to("spyre")
    with emulator.transfers() as t:
        y = spyre_ops.rms_norm(x, 64)
    assert t.host_to_device == t.device_to_host == 0 and not t.fallbacks
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .device_ops import ON_DEVICE, runs_on_device

__all__ = [
    "enable", "is_enabled", "transfers", "Transfers", "compile_graph", "dynamo_compile_graph",
    "ON_DEVICE", "runs_on_device",
]

DEVICE_NAME = "spyre"
_DEFAULT_PRIVATEUSE1_NAME = "privateuseone"
_enabled = False
_enable_lock = threading.Lock()  # enable() may be called from several threads at once


def is_enabled() -> bool:
    """Whether :func:`enable` has run in this process."""
    return _enabled


def _refuse(reason: str) -> None:
    raise RuntimeError(f"spyre_ops.emulator.enable(): {reason}; the emulated spyre device was not enabled")


def enable() -> None:
    """Makes ``"spyre"`` an (emulated) device of this process. Idempotent.

    Renames PyTorch's PrivateUse1 backend to ``"spyre"``, installs the emulated
    device's kernels and registers the device module ``torch.spyre``. The
    rename cannot be undone: run code that needs a clean PrivateUse1 backend in
    another process.

    Raises:
        RuntimeError: when torch-spyre is loaded (use the real device), when the
            PrivateUse1 backend already has another name or kernels from another
            library, or when ``torch.spyre`` already exists.
    """
    with _enable_lock:
        _enable_locked()


def _enable_locked() -> None:
    global _enabled
    if _enabled:
        return
    if "torch_spyre" in sys.modules:
        _refuse("torch-spyre is loaded in this process, so the real spyre device is in use")
    name = torch._C._get_privateuse1_backend_name()
    if name != _DEFAULT_PRIVATEUSE1_NAME:
        _refuse(f"the PrivateUse1 backend is already named {name!r} by another library")
    if torch._C._dispatch_has_kernel_for_dispatch_key("aten::empty.memory_format", "PrivateUse1"):
        _refuse("another library already registered a PrivateUse1 backend")
    if hasattr(torch, DEVICE_NAME):
        _refuse(f"torch.{DEVICE_NAME} already exists")

    from ..spyre import graphs
    from . import _C, device_module

    _C.install()
    torch.utils.rename_privateuse1_backend(DEVICE_NAME)
    torch._register_device_module(DEVICE_NAME, device_module)
    torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)
    atexit.register(_release_last_backward)
    graphs.set_graph_compiler(compile_graph)
    _enabled = True


class _GraphCounters:
    """Compiles and launches of graphs on the emulated device, and the ops the launches ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.compiles = 0
        self.launches = 0
        self.ops: Counter = Counter()

    def state(self) -> tuple[int, int, Counter]:
        with self.lock:
            return self.compiles, self.launches, Counter(self.ops)


_graph_counters = _GraphCounters()


def _compiled(run: Callable[..., Any]) -> Callable[..., Any]:
    """Counts one compile and wraps its result: each call counts as one launch, and the ops it
    runs as graph ops."""
    from . import _C

    with _graph_counters.lock:
        _graph_counters.compiles += 1

    def launch(*args: Any) -> Any:
        before = _C.snapshot()["ops"]
        try:
            return run(*args)
        finally:
            after = _C.snapshot()["ops"]
            ran = Counter(after)
            ran.subtract(before)
            with _graph_counters.lock:
                _graph_counters.launches += 1
                _graph_counters.ops.update({op: n for op, n in ran.items() if n > 0})

    return launch


def compile_graph(graph: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """The emulated device's stand-in for torch-spyre's compile of a graph (the default once enabled).

    Counts one compile and returns a launcher that runs the aten graph op by op
    on the device (see :func:`transfers`).
    """
    return _compiled(graph)


def dynamo_compile_graph(
    graph: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]
) -> Callable[..., Any]:
    """Like :func:`compile_graph`, through Dynamo as torch-spyre's compile goes:
    :func:`spyre_ops.spyre.graphs.torch_compile` with the ``aot_eager`` backend instead of Inductor
    (which needs torch-spyre for a spyre device). Select it with
    ``spyre_ops.spyre.graphs.set_graph_compiler(dynamo_compile_graph)``.
    """
    return _compiled(torch.compile(graph.forward, backend="aot_eager", dynamic=False, fullgraph=True))


def _release_last_backward() -> None:
    """At exit, makes the autograd thread of the spyre device drop the last backward's state.

    PyTorch runs backward nodes of a device on a thread of its own, which drops
    its reference to a finished backward only after the caller has returned.
    That state holds a Python object (the context ``torch.autograd.backward``
    stashes), so when the process exits right after a backward the thread may
    release it during interpreter shutdown and abort the process ("terminate
    called without an active exception"; seen here with the emulated device and
    any op; a race in PyTorch that any device with its own autograd thread is
    exposed to). Running one more, tiny backward on the device through the engine
    directly (no stashed context) guarantees the thread has moved past the last
    one before the interpreter shuts down.
    """
    try:
        x = torch.zeros(1, device=DEVICE_NAME, requires_grad=True)
        y = (x * 1).sum()
        torch.autograd.Variable._execution_engine.run_backward(
            (y,), (torch.ones((), device=DEVICE_NAME),), False, False, (), True, True
        )
    except Exception:  # noqa: BLE001  (best effort at exit; never mask the real exit status)
        pass


@dataclass
class Transfers:
    """What happened on the emulated device inside one :func:`transfers` block.

    The fields are filled in when the block exits.

    Attributes:
        host_to_device: copies from host memory to a spyre tensor.
        device_to_host: copies from a spyre tensor to host memory (``.item()`` counts).
        host_to_device_bytes, device_to_host_bytes: their sizes.
        ops: every op that ran eagerly on spyre tensors (outside a launched
            graph), by qualified name, with its call count: on torch-spyre each
            compute op among them is a compile and a launch of its own.
        graph_ops: the ops that ran inside launched graphs.
        compiles: graphs compiled for the device (:func:`compile_graph`).
        launches: compiled graphs run.
        fallbacks: those of ``ops`` and ``graph_ops`` that torch-spyre does not run
            on the device (:data:`ON_DEVICE`): on a Spyre card each is a hidden
            round trip to the CPU.
    """

    host_to_device: int = 0
    device_to_host: int = 0
    host_to_device_bytes: int = 0
    device_to_host_bytes: int = 0
    ops: Counter = field(default_factory=Counter)
    graph_ops: Counter = field(default_factory=Counter)
    compiles: int = 0
    launches: int = 0
    fallbacks: Counter = field(default_factory=Counter)

    def _update(self, start: dict, now: dict, graphs_start: tuple, graphs_now: tuple) -> None:
        self.host_to_device = now["h2d_copies"] - start["h2d_copies"]
        self.device_to_host = now["d2h_copies"] - start["d2h_copies"]
        self.host_to_device_bytes = now["h2d_bytes"] - start["h2d_bytes"]
        self.device_to_host_bytes = now["d2h_bytes"] - start["d2h_bytes"]
        self.compiles = graphs_now[0] - graphs_start[0]
        self.launches = graphs_now[1] - graphs_start[1]
        graph_ops = Counter(graphs_now[2])
        graph_ops.subtract(graphs_start[2])
        self.graph_ops = Counter({op: n for op, n in graph_ops.items() if n > 0})
        ops = Counter(now["ops"])
        ops.subtract(start["ops"])
        ops.subtract(self.graph_ops)
        self.ops = Counter({op: n for op, n in ops.items() if n > 0})
        self.fallbacks = Counter(
            {op: n for op, n in (self.ops + self.graph_ops).items() if not runs_on_device(op)}
        )


@contextlib.contextmanager
def transfers() -> Iterator[Transfers]:
    """Counts host<->device copies and off-device ops on the emulated device in a block.

    Usage::

        with spyre_ops.emulator.transfers() as t:
            y = torch.ops.spyre.rms_norm(x, [hidden])
        print(t.host_to_device, t.device_to_host, dict(t.fallbacks))

    Counts cover every thread. Copies and ops the CPU fallback issues for itself
    are not counted as transfers: the fallback op itself is counted in
    ``fallbacks``.

    Raises:
        RuntimeError: if the emulated device is not enabled.
    """
    if not _enabled:
        raise RuntimeError("spyre_ops.emulator.transfers(): call spyre_ops.emulator.enable() first")
    from . import _C

    graphs_start = _graph_counters.state()
    start = _C.snapshot()
    result = Transfers()
    try:
        yield result
    finally:
        result._update(start, _C.snapshot(), graphs_start, _graph_counters.state())
