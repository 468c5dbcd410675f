"""Row-loop throughput on cache-resident rows: elements per ns on one thread.

Usage::

    python benchmarks/row_throughput.py                       # this build
    python benchmarks/row_throughput.py --builds OLD NEW      # several builds, same run
    python benchmarks/row_throughput.py --dtypes bf16 --hidden 4096 --tokens 32,256
    python benchmarks/row_throughput.py --qk --dtypes bf16 --hidden 4096 --tokens 64 --us

For fp32/bf16/fp16 rows of 2048-8192 at 32-256 tokens (decode: a row in L1/L2,
the tensor in L2/L3), each round times one batch (at least 2 ms) of every column,
of every build, in turn; a time is the median over the rounds (``--stat min``:
the fastest round), and a cell whose rounds disagree (interquartile range over
median > 0.25) is marked ``~``. Columns:
``copy`` (``y.copy_(x)``, the roof), ``vllm_out`` (vLLM's ``_C.rms_norm`` into
``y``), ``spyre`` (the functional op), ``spyre_out`` (``out=y``); with ``--fused``
the residual-add ops instead: ``vllm_fused_`` (vLLM's in-place
``_C.fused_add_rms_norm``), ``spyre_fused`` and ``spyre_fused_`` (in place), which
move twice the bytes (fraction of ``copy`` counted in bytes); with ``--qk`` the
per-head q/k norm (``hidden`` = heads x 128) on ``q = qkv[:, :hidden].view(tokens,
heads, 128)``, a view of a fused qkv tensor (row stride 128 within a token, 3 x
hidden between tokens): ``copy`` (``y.copy_(q)``, the copy alone), ``F.rms_norm``
on the view, ``vllm`` (vLLM's ``_C.rms_norm`` on ``q.contiguous()``: it reads a
3-D strided view wrongly), ``vllm_contig`` (its kernel alone, on a contiguous q
made beforehand), ``spyre_qk`` (``spyre_ops.rms_norm`` on the view) and
``spyre_qk_contig`` (on ``q.contiguous()``). Printed: elements per ns (``--us``:
microseconds per call) and the fraction of ``copy``; then the marginal rate per column,
(elements at the most tokens - at the fewest) / (difference of their times),
which leaves out the fixed cost of a call. Always one thread, under
``torch.inference_mode()``.

With ``--builds DIR ...`` every build of spyre_ops (a directory holding a built
``spyre_ops`` package) runs in a worker process of its own, with DIR first on
PYTHONPATH, and this process hands out the rounds, so all builds share the
machine's busy and quiet spells. ``copy`` and ``vllm_out`` are timed in every
worker; the table shows them from the first. ``--cpu-time`` times with the
thread's CPU clock instead of the wall clock: on a machine with more runnable
processes than cores, the time a worker waits for a core is left out (what the
other processes do to the caches is not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TOKENS = (32, 64, 128, 256)
HIDDEN = (2048, 4096, 8192)
DTYPES = ("fp32", "bf16", "fp16")
#: (the peers' columns, copy first; spyre_ops' columns; bytes moved per element in units of copy's)
MODES = {
    "rms_norm": (("copy", "vllm_out"), ("spyre", "spyre_out"), 1),
    "fused": (("copy", "vllm_fused_"), ("spyre_fused", "spyre_fused_"), 2),
    "qk": (("copy", "F.rms_norm", "vllm", "vllm_contig"), ("spyre_qk", "spyre_qk_contig"), 1),
}
HEAD_DIM = 128
MIN_BATCH_S = 0.002
#: The clock batches are timed with (time.thread_time with --cpu-time).
clock = time.perf_counter


def worker() -> None:
    """Serves one build: reads {"case": [tokens, hidden, dtype]} or {"round": 1}
    lines, answers with the columns' batch sizes or seconds per call."""
    import torch

    from peers import EPS, Case, load_vllm_ops, qk_calls

    # Replies go to the original stdout; anything else printed goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    torch.set_num_threads(1)
    vllm = load_vllm_ops() is not None
    calls: dict = {}
    batches: dict = {}
    with torch.inference_mode():
        for line in sys.stdin:
            msg = json.loads(line)
            if "case" in msg:
                n, h, name = msg["case"]
                dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
                if msg["mode"] == "qk":
                    calls = {k: f for k, f in qk_calls(n, h, HEAD_DIM, dtype, vllm).items() if k in msg["columns"]}
                    batches = {k: batch_size(f) for k, f in calls.items()}
                    print(json.dumps(batches), file=replies, flush=True)
                    continue
                c = Case(n, h, dtype)
                x, r, w, y = c.x, c.residual, c.weight, torch.empty_like(c.x)
                # The in-place ops keep normalizing x and adding it into the
                # residual: values drift but stay ordinary rows.
                xi, ri = x.clone(), r.clone()
                calls = {"copy": lambda: y.copy_(x),
                         "spyre": lambda: torch.ops.spyre.rms_norm(x, [h], w, EPS),
                         "spyre_out": lambda: torch.ops.spyre.rms_norm.out(x, [h], w, EPS, out=y),
                         "spyre_fused": lambda: torch.ops.spyre.fused_add_rms_norm(x, r, [h], w, EPS),
                         "spyre_fused_": lambda: torch.ops.spyre.fused_add_rms_norm_(xi, ri, [h], w, EPS)}
                if vllm:
                    calls["vllm_out"] = lambda: torch.ops._C.rms_norm(y, x, w, EPS)
                    calls["vllm_fused_"] = lambda: torch.ops._C.fused_add_rms_norm(xi, ri, w, EPS)
                calls = {k: f for k, f in calls.items() if k in msg["columns"]}
                batches = {k: batch_size(f) for k, f in calls.items()}
                reply: object = batches
            else:
                reply = {}
                for k, f in calls.items():
                    t0 = clock()
                    for _ in range(batches[k]):
                        f()
                    reply[k] = (clock() - t0) / batches[k]
            print(json.dumps(reply), file=replies, flush=True)


def batch_size(fn) -> int:
    """Calls per batch so that one batch lasts at least MIN_BATCH_S (after warm-up)."""
    for _ in range(5):
        fn()
    t0 = clock()
    for _ in range(10):
        fn()
    return max(1, int(MIN_BATCH_S / max((clock() - t0) / 10, 1e-8)))


class Worker:
    """One build of spyre_ops in a process of its own."""

    def __init__(self, build: str | None, cpu_time: bool = False) -> None:
        env = dict(os.environ)
        here = os.path.dirname(os.path.abspath(__file__))
        path = [here] + ([os.path.abspath(build)] if build else []) + [env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        env["OMP_NUM_THREADS"] = "1"
        argv = [sys.executable, os.path.abspath(__file__), "--worker"] + (["--cpu-time"] if cpu_time else [])
        self.proc = subprocess.Popen(argv, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, msg: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker exited; see its error above")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builds", nargs="+", help="directories holding a built spyre_ops (default: the importable one)")
    p.add_argument("--tokens", type=ints, default=TOKENS)
    p.add_argument("--hidden", type=ints, default=HIDDEN)
    p.add_argument("--dtypes", type=lambda s: tuple(s.split(",")), default=DTYPES)
    p.add_argument("--rounds", type=int, default=15, help="timed rounds per case (default 15)")
    p.add_argument("--stat", choices=("median", "min"), default="median", help="statistic over the rounds")
    p.add_argument("--json", metavar="FILE", help="also write the times (seconds per call) as JSON")
    p.add_argument("--fused", action="store_true", help="the residual-add ops instead of rms_norm")
    p.add_argument("--qk", action="store_true", help="the per-head q/k norm on a view of a fused qkv tensor")
    p.add_argument("--us", action="store_true", help="print microseconds per call instead of elements/ns")
    p.add_argument("--cpu-time", action="store_true", help="time with the thread's CPU clock, not the wall clock")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        global clock
        clock = time.thread_time if args.cpu_time else time.perf_counter
        worker()
        return 0

    builds = args.builds or [None]
    names = [os.path.basename(os.path.normpath(b)) if b else "this build" for b in builds]
    workers = [Worker(b, args.cpu_time) for b in builds]
    mode = "qk" if args.qk else "fused" if args.fused else "rms_norm"
    unit = "us per call" if args.us else "elements/ns"
    print(f"# {mode}, one thread; {unit} (fraction of copy_), {args.stat} of {args.rounds} rounds",
          "(thread CPU time);" if args.cpu_time else "(wall clock);",
          "builds:", ", ".join(f"[{i}] {n}" for i, n in enumerate(names)))
    peer_cols, spyre_cols, nbytes = MODES[mode]
    columns = [*peer_cols, *spyre_cols]
    head = ["case", *peer_cols] + [f"{c}[{i}]" for i in range(len(builds)) for c in spyre_cols]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    medians: dict[str, list[dict[str, float]]] = {}
    try:
        for dtype in args.dtypes:
            for h in args.hidden:
                for n in args.tokens:
                    for wk in workers:
                        wk.ask({"case": [n, h, dtype], "columns": columns, "mode": mode})
                    rounds: list[dict[str, list[float]]] = [{} for _ in workers]
                    for _ in range(args.rounds):
                        for i, wk in enumerate(workers):
                            for k, t in wk.ask({"round": 1}).items():
                                rounds[i].setdefault(k, []).append(t)
                    stat = statistics.median if args.stat == "median" else min
                    med = [{k: stat(v) for k, v in r.items()} for r in rounds]
                    noisy = [{k for k, v in r.items() if spread(v) > 0.25} for r in rounds]
                    medians[f"{n}x{h} {dtype}"] = med
                    print_row(f"{n}x{h} {dtype}", n * h, med, noisy, peer_cols, spyre_cols, nbytes, args.us)
    finally:
        for wk in workers:
            wk.close()
    print_marginal(medians, args, len(builds), peer_cols, spyre_cols)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"builds": names, "seconds_per_call": medians}, f, indent=1)
    return 0


def spread(v: list[float]) -> float:
    """Interquartile range over median."""
    q = statistics.quantiles(v, n=4)
    return (q[2] - q[0]) / statistics.median(v)


def rate(elements: int, seconds: float | None, us: bool = False) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e6:.1f}" if us else f"{elements / seconds / 1e9:.2f}"


def print_row(case: str, elements: int, med: list[dict[str, float]], noisy: list[set[str]],
              peer_cols: tuple[str, ...], spyre_cols: tuple[str, ...], nbytes: int, us: bool) -> None:
    def mark(i: int, c: str) -> str:
        return "~" if c in noisy[i] else ""

    cells = [case] + [rate(elements, med[0].get(c), us) + mark(0, c) for c in peer_cols]
    for i, m in enumerate(med):
        for c in spyre_cols:
            cells.append(f"{rate(elements, m[c], us)}{mark(i, c)} ({nbytes * m['copy'] / m[c]:.2f})")
    print("| " + " | ".join(cells) + " |", flush=True)


def print_marginal(medians: dict, args: argparse.Namespace, nbuilds: int, peer_cols: tuple[str, ...],
                   spyre_cols: tuple[str, ...]) -> None:
    lo, hi = min(args.tokens), max(args.tokens)
    if lo == hi:
        return
    print(f"\n# marginal elements/ns, {lo} -> {hi} tokens (fixed cost per call left out)")
    head = ["rows", *peer_cols] + [f"{c}[{i}]" for i in range(nbuilds) for c in spyre_cols]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for dtype in args.dtypes:
        for h in args.hidden:
            a, b = medians[f"{lo}x{h} {dtype}"], medians[f"{hi}x{h} {dtype}"]
            extra = (hi - lo) * h

            def marginal(i: int, c: str) -> str:
                if c not in a[i]:
                    return "n/a"
                return rate(extra, b[i][c] - a[i][c])

            cells = [f"{h} {dtype}"] + [marginal(0, c) for c in peer_cols]
            cells += [marginal(i, c) for i in range(nbuilds) for c in spyre_cols]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
