"""Compares two runs of bench_rms_norm.py: did any cell get slower against its peers?

Usage::

    python benchmarks/compare.py OLD.json NEW.json [--worse 0.9]

Runs on a shared machine are compared through same-run ratios, never raw
times: for each cell (tokens x hidden x dtype) present in both runs and each
speedup the benchmark reports (``spyre vs vllm``, ``spyre_out vs vllm_out``,
...; > 1 means spyre_ops is faster), prints old, new and new/old, plus the
fraction of ``copy_`` each spyre column reaches. A speedup whose new/old falls
below ``--worse`` is marked ``!``. The exit code is 0 either way: this is a
report, not a test (the runs' noise decides how much a mark means; see each
run's ``noisy`` cells, marked ``~``).
"""

from __future__ import annotations

import argparse
import json
import sys


def _cells(run: dict) -> dict[str, dict]:
    return {c["case"]: c for c in run["results"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--worse", type=float, default=0.9, help="mark new/old below this (default 0.9)")
    args = p.parse_args(argv)
    with open(args.old) as f:
        old = _cells(json.load(f))
    with open(args.new) as f:
        new = _cells(json.load(f))
    common = [name for name in new if name in old]
    if not common:
        print("no cell in common")
        return 0
    marked = 0
    for name in common:
        o, n = old[name], new[name]
        noisy = set(o.get("noisy", [])) | set(n.get("noisy", []))
        parts = []
        for key, nv in n["speedup"].items():
            ov = o["speedup"].get(key)
            if ov is None or nv is None:
                continue
            change = nv / ov
            flag = "!" if change < args.worse else " "
            marked += flag == "!"
            cols = key.split(" vs ")
            tilde = "~" if noisy & set(cols) else ""
            parts.append(f"{key} {ov:.2f}->{nv:.2f} ({change:.2f}{flag}){tilde}")
        fractions = " ".join(
            f"{col} {n['memcpy_fraction'][col]:.2f}" for col in ("spyre", "spyre_out", "spyre_fused_")
            if n["memcpy_fraction"].get(col) is not None)
        print(f"{name:16s} " + "; ".join(parts) + f" | of copy_: {fractions}")
    print(f"\n{len(common)} cells, {marked} speedups below {args.worse} of the old run's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
