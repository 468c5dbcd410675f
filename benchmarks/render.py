"""Rendering of a benchmark run (the dict ``bench_rms_norm.py --json`` writes):
text tables, a Markdown table, and a plot of bandwidth against tokens.

Needs no torch: ``python benchmarks/render.py RUN.json --plot DIR --markdown FILE``
redraws a saved run (the plot needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Speedups reported: (spyre_ops column, peer column).
SPEEDUPS = (
    ("spyre", "F.rms_norm"),
    ("spyre", "native"),
    ("spyre", "inductor"),
    ("spyre", "vllm"),
    ("spyre_out", "vllm_out"),
    ("spyre_fused_", "vllm_fused_"),
)
MARKDOWN_TIMES = ("copy", "F.rms_norm", "native", "inductor", "vllm", "vllm_out", "vllm_fused_",
                  "spyre", "spyre_out", "spyre_fused", "spyre_fused_")
# Plotted columns and their styles: peers dashed, spyre_ops solid, copy_ the roof.
PLOT_STYLES: dict[str, dict] = {
    "copy": {"color": "black", "linewidth": 2.5, "label": "copy_ (memcpy roof)"},
    "F.rms_norm": {"color": "tab:gray", "linestyle": "--"},
    "native": {"color": "tab:brown", "linestyle": "--"},
    "inductor": {"color": "tab:pink", "linestyle": "--"},
    "vllm": {"color": "tab:orange", "linestyle": "--"},
    "vllm_out": {"color": "tab:red", "linestyle": "--"},
    "vllm_fused_": {"color": "tab:purple", "linestyle": "--"},
    "spyre": {"color": "tab:blue", "marker": "o"},
    "spyre_out": {"color": "tab:cyan", "marker": "s"},
    "spyre_fused": {"color": "tab:olive", "marker": "^"},
    "spyre_fused_": {"color": "tab:green", "marker": "v"},
    "spyre_emu": {"color": "tab:gray", "marker": "x", "linestyle": ":"},
}


def _cell(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def print_tables(result: dict) -> None:
    """Two text tables: time per call per column; then spyre_ops' bandwidth and speedups.
    A time whose repeats disagree (IQR/median above the run's threshold) is marked ``~``."""
    results, stat = result["results"], result["machine"]["statistic"]
    columns = [c for c in PLOT_STYLES if any(r["us"].get(c) is not None for r in results)]
    w0 = max(len(r["case"]) for r in results) + 2
    widths = [max(len(c), 7) + 2 for c in columns]
    print(f"\n{stat.capitalize()} time per call (us); ~ marks a noisy cell "
          f"(IQR/median > {result['noisy_threshold']})")
    print("case".ljust(w0) + "".join(c.rjust(wd) for c, wd in zip(columns, widths)))
    for r in results:
        t, noisy = r["us"], r.get("noisy", [])
        print(r["case"].ljust(w0) + "".join(
            (_cell(t.get(c), ".1f") + ("~" if c in noisy else "")).rjust(wd) for c, wd in zip(columns, widths)))

    bw_cols = [c for c in ("copy", "spyre", "spyre_out", "spyre_fused", "spyre_fused_") if c in columns]
    heads = [f"GB/s {c}" for c in bw_cols] + [f"{c}/memcpy" for c in bw_cols[1:]]
    heads += [f"{a} vs {b}" for a, b in SPEEDUPS]
    hw = [max(len(h), 7) + 2 for h in heads]
    print("\nspyre_ops: bandwidth, fraction of memcpy bandwidth, speedup (peer time / spyre_ops time)")
    print("case".ljust(w0) + "".join(h.rjust(wd) for h, wd in zip(heads, hw)))
    for r in results:
        cells = [_cell(r["gbps"].get(c), ".1f") for c in bw_cols]
        cells += [_cell(r["memcpy_fraction"].get(c), ".2f") for c in bw_cols[1:]]
        cells += [_cell(r["speedup"].get(f"{a} vs {b}"), ".2f") + "x" * (r["speedup"].get(f"{a} vs {b}") is not None)
                  for a, b in SPEEDUPS]
        print(r["case"].ljust(w0) + "".join(c.rjust(wd) for c, wd in zip(cells, hw)))


def markdown(result: dict) -> str:
    """A Markdown rendering of a run: us per column (noisy cells marked ~), then
    spyre_ops' fraction of memcpy bandwidth and its speedups."""
    lines = ["Run on: " + "; ".join(f"{k} {v}" for k, v in result["machine"].items()) + ".", ""]
    if "noisy_threshold" in result:
        lines += [f"`~`: the repeats of that cell disagree (IQR/median > {result['noisy_threshold']}).", ""]
    heads = ["case", *MARKDOWN_TIMES, "out/memcpy", "fused_/memcpy",
             "spyre vs vllm", "out vs vllm_out", "fused_ vs vllm_fused_", "spyre vs F.rms_norm"]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|" + "---|" * len(heads))
    for r in result["results"]:
        t, f, sp, noisy = r["us"], r["memcpy_fraction"], r["speedup"], r.get("noisy", [])
        cells = [r["case"], *((_cell(t.get(c), ".1f") + ("~" if c in noisy else "")) for c in MARKDOWN_TIMES)]
        cells += [_cell(f.get(c), ".2f") for c in ("spyre_out", "spyre_fused_")]
        cells += [_cell(sp.get(k), ".2f") + "x" * (sp.get(k) is not None)
                  for k in ("spyre vs vllm", "spyre_out vs vllm_out", "spyre_fused_ vs vllm_fused_",
                            "spyre vs F.rms_norm")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, directory: str) -> list[str]:
    """One PNG per dtype: GB/s against tokens, a panel per hidden size, every
    implementation of the run, copy_ as the roof. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    m = result["machine"]
    paths = []
    for dtype in dict.fromkeys(r["dtype"] for r in result["results"]):
        rows = [r for r in result["results"] if r["dtype"] == dtype]
        hiddens = sorted({r["hidden"] for r in rows})
        fig, axes = plt.subplots(1, len(hiddens), figsize=(4.5 * len(hiddens), 4.8), sharey=True, squeeze=False)
        for ax, h in zip(axes[0], hiddens):
            hr = sorted((r for r in rows if r["hidden"] == h), key=lambda r: r["tokens"])
            for col, style in PLOT_STYLES.items():
                pts = [(r["tokens"], r["gbps"][col]) for r in hr if r["gbps"].get(col) is not None]
                if pts:
                    style = {"label": col, "linewidth": 1.5, "markersize": 5, **style}
                    ax.plot(*zip(*pts), **style)
                    noisy = [(r["tokens"], r["gbps"][col]) for r in hr
                             if col in r.get("noisy", []) and r["gbps"].get(col) is not None]
                    if noisy:
                        ax.scatter(*zip(*noisy), s=90, facecolors="none", edgecolors="red", zorder=5)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["tokens"] for r in hr}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_title(f"hidden {h}")
            ax.set_xlabel("tokens")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("GB/s (bytes read + written / time)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        axes[0][-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
        fig.suptitle(
            f"RMSNorm {dtype}: {m['statistic']} over interleaved rounds, {m['torch_threads']} thread(s), "
            f"{m['mode']}\n{m['cpu']}, spyre_ops {m['spyre_ops_cpu_capability']}, {m['vllm']}, "
            f"torch {m['torch']}\nred circle: a noisy cell (its rounds disagree)", fontsize=8, y=1.0, va="bottom")
        path = os.path.join(directory, f"rms_norm_{dtype}.png")
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="a run written by bench_rms_norm.py --json")
    p.add_argument("--plot", metavar="DIR", help="write rms_norm_<dtype>.png into DIR")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown table into FILE ('-': print it)")
    args = p.parse_args(argv)
    with open(args.json) as f:
        result = json.load(f)
    if args.markdown == "-":
        print(markdown(result))
    elif args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(result))
    if args.plot:
        for path in plot(result, args.plot):
            print(f"# wrote {path}")
    if not (args.plot or args.markdown):
        print_tables(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
