"""Per-call cost of one-token RMSNorm (decode), spyre_ops against vLLM's CPU kernel.

Usage::

    python benchmarks/per_call.py                  # 1x4096, fp32 and bf16
    python benchmarks/per_call.py --hidden 8192 --rounds 400

Every variant is timed in the same run, interleaved: each round times a batch of
``--batch`` calls of every variant in turn, so that a busy spell of the shared
machine hits all variants alike. Reported per variant: the median and the lower
decile over rounds of the mean time per call in a batch, in microseconds, and
the ratio of the medians to vLLM's of the same kind in the same grad mode
(fresh output: ``torch.empty_like`` + ``_C.rms_norm``; preallocated output:
``_C.rms_norm`` into it; in place: ``_C.fused_add_rms_norm``). One thread.

Variants: each of spyre_ops' entry points, the raw ``torch.ops.spyre.*`` call
and the wrapper ``spyre_ops.*`` (which makes the same dispatcher call from C++
for plain arguments, see spyre_ops/ops.py), for the functional op, ``out=`` and
the in-place fused op, in grad mode (inputs that need no grad), under
``torch.no_grad()`` and under ``torch.inference_mode()``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import torch

import spyre_ops
from peers import load_vllm_ops, vllm_fresh_call

EPS = 1e-6


MODES: dict[str, Callable] = {
    "grad mode": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def variants(x: torch.Tensor, w: torch.Tensor, vllm: bool) -> dict[tuple[str, str, str], Callable[[], object]]:
    """(kind, entry point, grad mode) -> call, for every variant."""
    h = x.shape[-1]
    y = torch.empty_like(x)
    # The in-place ops keep normalizing x and adding it into the residual: the
    # values drift but stay ordinary rows (no exact-path rows).
    xi, ri = x.clone(), torch.zeros_like(x)
    spyre = torch.ops.spyre
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    if vllm:
        vllm_ops = torch.ops._C
        calls[("fresh", "vllm _C.rms_norm + empty_like")] = vllm_fresh_call(x, w, EPS)
        calls[("out", "vllm _C.rms_norm")] = lambda: vllm_ops.rms_norm(y, x, w, EPS)
        calls[("in place", "vllm _C.fused_add_rms_norm")] = lambda: vllm_ops.fused_add_rms_norm(xi, ri, w, EPS)
    calls[("fresh", "torch.empty_like")] = lambda: torch.empty_like(x)
    calls[("fresh", "torch.ops.spyre.rms_norm")] = lambda: spyre.rms_norm(x, [h], w, EPS)
    calls[("fresh", "spyre_ops.rms_norm")] = lambda: spyre_ops.rms_norm(x, h, w, EPS)
    calls[("out", "torch.ops.spyre.rms_norm.out")] = lambda: spyre.rms_norm.out(x, [h], w, EPS, out=y)
    calls[("out", "spyre_ops.rms_norm(out=)")] = lambda: spyre_ops.rms_norm(x, h, w, EPS, out=y)
    calls[("in place", "torch.ops.spyre.fused_add_rms_norm_")] = lambda: spyre.fused_add_rms_norm_(xi, ri, [h], w, EPS)
    calls[("in place", "spyre_ops.fused_add_rms_norm_")] = lambda: spyre_ops.fused_add_rms_norm_(xi, ri, h, w, EPS)
    return {(kind, name, mode): fn for (kind, name), fn in calls.items() for mode in MODES}


def measure(vs: dict[tuple[str, str, str], Callable[[], object]], rounds: int, batch: int) -> dict:
    """Per-call microseconds of every variant, one value per round."""
    times: dict[tuple[str, str, str], list[float]] = {k: [] for k in vs}
    for (_, _, mode), fn in vs.items():  # warm-up
        with MODES[mode]():
            for _ in range(batch):
                fn()
    for _ in range(rounds):
        for k, fn in vs.items():
            with MODES[k[2]]():
                t0 = time.perf_counter_ns()
                for _ in range(batch):
                    fn()
                times[k].append((time.perf_counter_ns() - t0) / batch / 1e3)
    return times


def decile(v: list[float]) -> float:
    return statistics.quantiles(v, n=10)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    vllm = load_vllm_ops() is not None
    print(f"# spyre_ops {spyre_ops.__file__} ({spyre_ops._C.cpu_capability()}); vllm: {vllm}; "
          f"{args.rounds} rounds x {args.batch} calls, 1 thread")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, args.hidden, generator=g).to(dtype)
        w = (1 + 0.1 * torch.randn(args.hidden, generator=g)).to(dtype)
        t = measure(variants(x, w, vllm), args.rounds, args.batch)
        print(f"\n1x{args.hidden} {name}: us per call, median / lower decile (ratio of medians to vLLM's)")
        for kind in ("fresh", "out", "in place"):
            print(f"  {kind}:")
            for (k, entry, mode), v in t.items():
                if k != kind:
                    continue
                peer = next((p for (pk, pe, pm), p in t.items() if pk == k and pm == mode and pe.startswith("vllm")), None)
                ratio = ""
                if peer is not None and not entry.startswith(("vllm", "torch.empty_like")):
                    ratio = f"   x{statistics.median(v) / statistics.median(peer):.2f}"
                print(f"    {entry + ' (' + mode + ')':56s} {statistics.median(v):6.2f} / {decile(v):6.2f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
