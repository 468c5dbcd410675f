"""Plants known bugs in spyre_ops one at a time and checks that the tests catch each.

For each mutation: copy the checkout (tracked files plus the working tree's
changes) into a scratch directory, apply one textual edit to a key line of a
kernel (or registration), rebuild the extension in place there (incrementally:
the scratch directory and its build/ are kept between mutations and runs), run
the tests meant to catch it, and expect them to FAIL. The unmutated copy must
pass the same tests first, or the run stops.

Not part of `make test` (each C++ mutation rebuilds, ~1-3 min on 2 cores):

    python tools/mutation_check.py                # all mutations
    python tools/mutation_check.py bf16-truncate  # some, by name
    SCRATCH=/tmp/x python tools/mutation_check.py --list
    python tools/mutation_check.py --in-place     # mutate this checkout itself (reusing its
                                                  # build/; each file is restored afterwards)

Exit status 0 when every applicable mutation was caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = Path(os.environ.get("SCRATCH", "/tmp/spyre_ops_mutants"))

CPU_GUARDS = "tests/test_guards.py"
SPYRE_GUARDS = "tests/spyre/test_spyre_guards.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    needs: str = ""  # a substring of spyre_ops._C.cpu_capability() the mutated code needs


MUTATIONS = [
    Mutation(
        "bf16-truncate",
        "csrc/cpu/vec_lanes.h",
        "  static __m512i round_fast(const V& a, const V& b) {\n"
        "    return (__m512i)_mm512_cvtne2ps_pbh(b, a);",
        "  static __m512i round_fast(const V& a, const V& b) {\n"
        "    const __m512 hi = _mm512_castsi512_ps(_mm512_set1_epi32(0xFFFF0000));\n"
        "    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_and_ps(b, hi), _mm512_and_ps(a, hi));",
        (f"{CPU_GUARDS}::test_16bit_outputs_are_rounded_to_nearest",),
        needs="bf16",
    ),
    Mutation(
        "fused-normalizes-x-not-the-sum",
        "csrc/cpu/rms_norm_rows.h",
        "    src = residual_out;\n",
        "    src = x;\n",
        (f"{CPU_GUARDS}::test_fused_op_normalizes_the_rounded_sum",),
    ),
    Mutation(
        "backward-ignores-eps",
        "csrc/cpu/rms_norm_backward.cpp",
        "inverse_rms<T, Acc>(xr, cols, sumsq, eps)",
        "inverse_rms<T, Acc>(xr, cols, sumsq, 0.0)",
        (f"{CPU_GUARDS}::test_backward_uses_eps",),
    ),
    Mutation(
        "forward-mean-off-by-one",
        "csrc/cpu/rms_norm_rows.h",
        "const Acc inv = Acc(1) / std::sqrt(sumsq / static_cast<Acc>(cols) + static_cast<Acc>(eps));",
        "const Acc inv = Acc(1) / std::sqrt(sumsq / static_cast<Acc>(cols + (cols > 64)) + static_cast<Acc>(eps));",
        (f"{CPU_GUARDS}::test_16bit_outputs_are_rounded_to_nearest",),
    ),
    Mutation(
        "row-layout-merges-any-dims",
        "csrc/cpu/row_layout.cpp",
        "merges = strides_[(sizes_.size() - 1) * kTensors + j] == stride[j] * size;",
        "merges = true;",
        ("tests/test_cpu_strided_rows.py::test_functional_ops_give_the_bits_of_the_contiguous_call",),
    ),
    Mutation(
        "long-row-sums-unblocked",
        "csrc/cpu/rms_norm_rows.h",
        "constexpr int64_t kSumBlock = 8192;",
        "constexpr int64_t kSumBlock = int64_t(1) << 40;",
        ("tests/test_cpu_long_sums.py::test_forward_row_of_2_26",),
    ),
    Mutation(
        "weight-gradient-summed-in-float",
        "csrc/cpu/rms_norm_backward.cpp",
        "a[j] += static_cast<double>(static_cast<Acc>(gr[j])) * static_cast<double>(static_cast<Acc>(xr[j])) * s;",
        "a[j] = static_cast<float>(a[j] + static_cast<float>(gr[j]) * static_cast<float>(xr[j]) * float(s));",
        ("tests/test_cpu_long_sums.py::test_weight_gradient_over_2_20_tokens",),
    ),
    Mutation(
        "spyre-row-padding",
        "spyre_ops/spyre/formula.py",
        "mean_sq = torch.mean(torch.mul(ratio, ratio), dim=-1, keepdim=True)",
        "mean_sq = torch.sum(torch.mul(ratio, ratio), dim=-1, keepdim=True) / ((ratio.shape[-1] + 63) // 64 * 64)",
        (f"{SPYRE_GUARDS}::test_rows_that_are_not_whole_sticks",),
    ),
    Mutation(
        "spyre-inplace-accepts-aliases",
        "spyre_ops/spyre/kernels.py",
        "not _overlaps(x, residual),",
        "True,",
        (f"{SPYRE_GUARDS}::test_inplace_op_refuses_aliased_x_and_residual",),
    ),
    Mutation(
        "fake-backward-weight-dtype",
        "spyre_ops/fake.py",
        "grad_weight = weight.new_empty(weight.shape)",
        "grad_weight = x.new_empty(weight.shape)",
        (f"{CPU_GUARDS}::test_fake_backward_matches_the_real_kernel",
         f"{CPU_GUARDS}::test_compiled_bf16_training_gradients_match_the_reference"),
    ),
    Mutation(
        "compute-dtype-env-ignored",
        "spyre_ops/spyre/__init__.py",
        "\n_apply_environment()\n",
        "\n",
        (f"{SPYRE_GUARDS}::test_compute_dtype_environment_variable_is_applied_at_import",),
    ),
    Mutation(
        "emulator-refusal-removed",
        "spyre_ops/emulator/__init__.py",
        "    if hasattr(torch, DEVICE_NAME):\n        _refuse(",
        "    if False:\n        _refuse(",
        (f"{SPYRE_GUARDS}::test_emulator_refuses_each_conflicting_backend",),
    ),
    Mutation(
        "no-openmp",
        "setup.py",
        '        return ["-fopenmp"]\n    return []',
        "        return []\n    return []",
        (f"{CPU_GUARDS}::test_kernel_runs_on_more_than_one_thread",),
    ),
]


def sh(cmd: list[str], cwd: Path, log: Path) -> int:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(cwd)}).returncode


def sync_sources(dest: Path) -> None:
    """Copies tracked and untracked-but-not-ignored files into dest, keeping dest's build outputs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    for rel in files:
        src, dst = ROOT / rel, dest / rel
        if not src.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


def build(tree: Path, log: Path) -> bool:
    return sh([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], tree, log) == 0


def run_tests(tree: Path, tests: tuple[str, ...], log: Path) -> bool:
    """True if the tests pass."""
    return sh([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], tree, log) == 0


def capability(tree: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", "from spyre_ops import _C; print(_C.cpu_capability())"], cwd=tree,
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)},
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--in-place", action="store_true", help="mutate this checkout, not a copy")
    parser.add_argument("--no-build", action="store_true",
                        help="use the extension modules already in the tree; only Python mutations")
    args = parser.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:32s} {m.path}")
        return 0
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    log = SCRATCH / "log.txt"
    log.write_text("")
    if args.in_place:
        tree = ROOT
    else:
        tree = SCRATCH / "tree"
        tree.mkdir(parents=True, exist_ok=True)
        sync_sources(tree)
    if args.no_build:
        chosen = [m for m in chosen if m.path.endswith(".py") and m.path != "setup.py"]
    elif not build(tree, log):
        print(f"the unmutated copy does not build; see {log}")
        return 2
    cap = capability(tree)
    all_tests = tuple(sorted({t for m in chosen for t in m.tests}))
    spyre = tuple(t for t in all_tests if t.startswith("tests/spyre/"))
    rest = tuple(t for t in all_tests if not t.startswith("tests/spyre/"))
    if not all(run_tests(tree, group, log) for group in (rest, spyre) if group):
        print(f"the unmutated copy fails its targeted tests; see {log}")
        return 2
    missed = []
    applicable = 0
    for m in chosen:
        path = tree / m.path
        original = path.read_text()
        if m.needs and m.needs not in cap:
            print(f"{m.name:32s} not applicable (build capability {cap})")
            continue
        applicable += 1
        assert original.count(m.old) == 1, f"{m.name}: the line to mutate is not found once in {m.path}"
        start = time.time()
        path.write_text(original.replace(m.old, m.new))
        try:
            built = args.no_build or build(tree, log)
            caught = not built or not run_tests(tree, m.tests, log)
        finally:
            path.write_text(original)
        verdict = "caught" if caught else "MISSED"
        how = "" if built else " (does not build)"
        print(f"{m.name:32s} {verdict}{how}  [{time.time() - start:.0f} s]", flush=True)
        if not caught:
            missed.append(m.name)
    if not args.no_build:
        build(tree, log)  # leave the build unmutated
    print(f"{applicable - len(missed)} of {applicable} applicable mutations caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
