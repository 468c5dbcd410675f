"""Per-call cost of one-token RMSNorm (decode), spyre_ops against vLLM's CPU kernel.

Usage::

    python benchmarks/per_call.py                  # 1x4096, fp32 and bf16
    python benchmarks/per_call.py --hidden 8192 --rounds 400

Every variant is timed in the same run, interleaved: each round times a batch of
``--batch`` calls of every variant in turn, so that a busy spell of the shared
machine hits all variants alike. Reported per variant: the median and the lower
decile over rounds of the mean time per call in a batch, in microseconds, and
the ratio of those to vLLM's (fresh output: ``torch.empty_like`` + ``_C.rms_norm``;
preallocated output: ``_C.rms_norm`` into it). One thread.

Variants: the functional op in grad mode (inputs that need no grad), under
``torch.no_grad()`` and under ``torch.inference_mode()``; ``out=`` into a
preallocated tensor; the same through the Python wrapper ``spyre_ops.rms_norm``.
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


def variants(x: torch.Tensor, w: torch.Tensor, vllm: bool) -> dict[str, tuple[Callable[[], object], Callable]]:
    """Name -> (call, context manager factory) of every variant."""
    h = x.shape[-1]
    y = torch.empty_like(x)
    spyre = torch.ops.spyre
    grad, no_grad, inference = contextlib.nullcontext, torch.no_grad, torch.inference_mode
    v: dict[str, tuple[Callable[[], object], Callable]] = {}
    if vllm:
        vllm_rms_norm = torch.ops._C.rms_norm
        vllm_fresh = vllm_fresh_call(x, w, EPS)
        v["vllm (grad mode)"] = (vllm_fresh, grad)
        v["vllm (inference_mode)"] = (vllm_fresh, inference)
        v["vllm_out (grad mode)"] = (lambda: vllm_rms_norm(y, x, w, EPS), grad)
        v["vllm_out (inference_mode)"] = (lambda: vllm_rms_norm(y, x, w, EPS), inference)
    v["empty_like"] = (lambda: torch.empty_like(x), grad)
    v["spyre (grad mode)"] = (lambda: spyre.rms_norm(x, [h], w, EPS), grad)
    v["spyre (no_grad)"] = (lambda: spyre.rms_norm(x, [h], w, EPS), no_grad)
    v["spyre (inference_mode)"] = (lambda: spyre.rms_norm(x, [h], w, EPS), inference)
    v["spyre_out (grad mode)"] = (lambda: spyre.rms_norm.out(x, [h], w, EPS, out=y), grad)
    v["spyre_out (inference_mode)"] = (lambda: spyre.rms_norm.out(x, [h], w, EPS, out=y), inference)
    v["spyre_ops.rms_norm (grad mode)"] = (lambda: spyre_ops.rms_norm(x, h, w, EPS), grad)
    v["spyre_ops.rms_norm out= (grad mode)"] = (lambda: spyre_ops.rms_norm(x, h, w, EPS, out=y), grad)
    return v


def measure(vs: dict[str, tuple[Callable[[], object], Callable]], rounds: int, batch: int) -> dict[str, list[float]]:
    """Per-call microseconds of every variant, one value per round."""
    times: dict[str, list[float]] = {k: [] for k in vs}
    for fn, ctx in vs.values():  # warm-up
        with ctx():
            for _ in range(batch):
                fn()
    for _ in range(rounds):
        for k, (fn, ctx) in vs.items():
            with ctx():
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
        print(f"\n1x{args.hidden} {name}: us per call (median, lower decile; ratio to vLLM's of the same kind)")
        ref = {"fresh": t.get("vllm (grad mode)"), "out": t.get("vllm_out (grad mode)")}
        for k, v in t.items():
            kind = "out" if "out" in k else "fresh"
            r = ref[kind]
            ratio = "" if r is None or k.startswith("vllm") or k == "empty_like" else (
                f"   x{statistics.median(v) / statistics.median(r):.2f} / x{decile(v) / decile(r):.2f} of vllm"
                + ("_out" if kind == "out" else ""))
            print(f"  {k:38s} {statistics.median(v):6.2f} {decile(v):6.2f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
