"""CPU cost of the Gemma ops: ``(1 + weight)`` in the kernel against the plain op and
against the route it replaces, a ``1 + weight`` float32 tensor made on every call.

Usage::

    python benchmarks/bench_gemma.py                       # Gemma 3 270M's hidden 640 and 4096
    python benchmarks/bench_gemma.py --tokens 1,64 --hidden 640 --dtypes bf16

Columns, timed interleaved on the same inputs in one run (bench_rms_norm.time_interleaved):

* ``rms_norm``: ``spyre_ops.rms_norm(x, h, w)``, the plain op (same weight, scale ``w``);
* ``gemma``: ``spyre_ops.gemma_rms_norm(x, h, w)``, scale ``1 + w`` added in the kernel;
* ``1+w tensor``: ``spyre_ops.rms_norm(x, h, 1 + w.float())``, what Gemma layers did
  before the op existed (Hugging Face's and vLLM's ``GemmaRMSNorm`` make that tensor);
* the same three for the in-place fused residual add (``fused_add_rms_norm_``).

Reported: microseconds per call (median over rounds) and the ratios
``gemma / rms_norm`` (the cost of the offset: 1.00 is free) and
``1+w tensor / gemma`` (what the op saves). Inference mode, as vLLM serves.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch

import spyre_ops
from bench_rms_norm import dtypes_arg, ints, spread, time_interleaved
from peers import DTYPE_NAMES, Case, machine_header

EPS = 1e-6


def calls(case: Case) -> dict[str, tuple[Callable[[], object], Callable[[], None] | None]]:
    """The call (and input reset, for in-place calls) of every column."""
    x, r, h = case.x, case.residual, case.hidden
    w = case.weight - 1  # Gemma's weights are offsets around 0
    xi, ri = x.clone(), r.clone()

    def reset() -> None:
        xi.copy_(x)
        ri.copy_(r)

    return {
        "rms_norm": (lambda: spyre_ops.rms_norm(x, h, w, EPS), None),
        "gemma": (lambda: spyre_ops.gemma_rms_norm(x, h, w, EPS), None),
        "1+w tensor": (lambda: spyre_ops.rms_norm(x, h, 1 + w.float(), EPS), None),
        "fused_": (lambda: spyre_ops.fused_add_rms_norm_(xi, ri, h, w, EPS), reset),
        "gemma_fused_": (lambda: spyre_ops.gemma_fused_add_rms_norm_(xi, ri, h, w, EPS), reset),
        "fused_ 1+w tensor": (lambda: spyre_ops.fused_add_rms_norm_(xi, ri, h, 1 + w.float(), EPS), reset),
    }


#: (label, numerator column, denominator column) of the reported ratios of medians.
RATIOS = [
    ("gemma/rms_norm", "gemma", "rms_norm"),
    ("1+w/gemma", "1+w tensor", "gemma"),
    ("gemma_fused_/fused_", "gemma_fused_", "fused_"),
    ("1+w/gemma_fused_", "fused_ 1+w tensor", "gemma_fused_"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=ints, default=(1, 32, 256, 2048))
    p.add_argument("--hidden", type=ints, default=(640, 4096))
    p.add_argument("--dtypes", type=dtypes_arg, default=(torch.bfloat16, torch.float32))
    p.add_argument("--samples", type=int, default=15, help="timed rounds per case (default 15)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--min-sample-ms", type=float, default=5.0, help="least duration of one batch (default 5)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for k, v in machine_header(None, None).items():
        print(f"# {k}: {v}")
    names = list(calls(Case(1, 8, torch.float32)))
    print("\n| case | " + " | ".join(f"{n} us" for n in names) + " | " + " | ".join(r[0] for r in RATIOS) + " |")
    print("|---" * (1 + len(names) + len(RATIOS)) + "|")
    for dtype in args.dtypes:
        for h in args.hidden:
            for n in args.tokens:
                case = Case(n, h, dtype)
                times = time_interleaved(calls(case), args.samples, args.min_sample_ms / 1e3, grad_mode=False)
                us = {c: statistics.median(v) * 1e6 for c, v in times.items()}
                noisy = [c for c, v in times.items() if spread(v) > 0.25]
                cells = [f"{us[c]:.2f}" + ("*" if c in noisy else "") for c in names]
                ratios = [f"{us[a] / us[b]:.2f}" for _, a, b in RATIOS]
                print(f"| {n}x{h} {DTYPE_NAMES[dtype]} | " + " | ".join(cells + ratios) + " |")
                sys.stdout.flush()
    print("\n(* a column whose rounds spread more than 25% around the median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
