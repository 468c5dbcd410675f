"""The benchmarks run and report every column (a smoke test: no timing is asserted).

`make bench`, benchmarks/per_call.py, benchmarks/row_throughput.py and
tools/loop_instructions.py are not part of `make test`; these runs on a tiny grid
keep them working as the package changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(BENCH), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          env=env, cwd=BENCH, timeout=600)


def test_bench_gemma_reports_every_column_and_ratio():
    r = _run("bench_gemma.py", "--tokens", "1,4", "--hidden", "64", "--dtypes", "bf16", "--samples", "2",
             "--min-sample-ms", "0.1")
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("| case |"))
    for column in ("rms_norm us", "gemma us", "1+w tensor us", "fused_ us", "gemma_fused_ us",
                   "gemma/rms_norm", "1+w/gemma", "gemma_fused_/fused_", "1+w/gemma_fused_"):
        assert f"| {column} |" in header + "|", (column, header)
    assert "| 1x64 bf16 |" in r.stdout and "| 4x64 bf16 |" in r.stdout


def test_per_call_reports_every_entry_point():
    r = _run("per_call.py", "--hidden", "64", "--dtypes", "float32", "--rounds", "3", "--batch", "2")
    assert r.returncode == 0, r.stderr
    for entry in ("torch.ops.spyre.rms_norm", "spyre_ops.rms_norm", "torch.ops.spyre.rms_norm.out",
                  "spyre_ops.rms_norm(out=)", "torch.ops.spyre.fused_add_rms_norm_", "spyre_ops.fused_add_rms_norm_"):
        for mode in ("grad mode", "no_grad", "inference_mode"):
            assert f"{entry} ({mode})" in r.stdout, (entry, mode, r.stdout)


def test_bench_writes_every_spyre_column(tmp_path):
    out = tmp_path / "run.json"
    table = tmp_path / "run.md"
    r = _run("bench_rms_norm.py", "--tokens", "1,4", "--hidden", "64", "--dtypes", "fp32", "--samples", "2",
             "--no-inductor", "--json", str(out), "--markdown", str(table))
    assert r.returncode == 0, r.stderr
    run = json.loads(out.read_text())
    assert [(c["tokens"], c["hidden"], c["dtype"]) for c in run["results"]] == [(1, 64, "fp32"), (4, 64, "fp32")]
    for case in run["results"]:
        for column in ("copy", "spyre", "spyre_out", "spyre_fused", "spyre_fused_"):
            assert case["gbps"][column] is not None and case["gbps"][column] > 0, (column, case)
    assert "spyre_out" in table.read_text()
    same = _run("compare.py", str(out), str(out))
    assert same.returncode == 0, same.stderr
    assert "1x64 fp32" in same.stdout and "spyre_out vs vllm_out" in same.stdout
    assert "2 cells, 0 speedups below 0.9" in same.stdout


def test_row_throughput_times_every_column_of_two_builds(tmp_path):
    out = tmp_path / "rows.json"
    r = _run("row_throughput.py", "--builds", str(ROOT), str(ROOT), "--tokens", "2,4", "--hidden", "64",
             "--dtypes", "fp32,bf16", "--rounds", "3", "--json", str(out))
    assert r.returncode == 0, r.stderr
    run = json.loads(out.read_text())
    assert sorted(run["seconds_per_call"]) == ["2x64 bf16", "2x64 fp32", "4x64 bf16", "4x64 fp32"]
    for case, builds in run["seconds_per_call"].items():
        assert len(builds) == 2, case
        for times in builds:
            for column in ("copy", "spyre", "spyre_out"):
                assert times[column] > 0, (case, column)
    assert "marginal elements/ns, 2 -> 4 tokens" in r.stdout and "| 64 bf16 |" in r.stdout


def test_row_throughput_times_the_qk_norm_on_a_view(tmp_path):
    out = tmp_path / "qk.json"
    r = _run("row_throughput.py", "--qk", "--tokens", "2", "--hidden", "256", "--dtypes", "bf16",
             "--rounds", "3", "--us", "--json", str(out))
    assert r.returncode == 0, r.stderr
    (times,) = json.loads(out.read_text())["seconds_per_call"]["2x256 bf16"]
    for column in ("copy", "F.rms_norm", "spyre_qk", "spyre_qk_contig"):
        assert times[column] > 0, column
    assert "us per call" in r.stdout and "| 2x256 bf16 |" in r.stdout


@pytest.mark.skipif(shutil.which("objdump") is None or shutil.which("nm") is None, reason="needs binutils")
def test_loop_instructions_counts_the_row_loops_of_the_built_module():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "loop_instructions.py")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    found = re.findall(r"spyre_ops::cpu::(.+?): \d+ instructions, \d+ elements per iteration: ([\d.]+)/element",
                       r.stdout)
    per_element = dict(found)
    # scale_row<kStream, kOffset, T, W, Acc>: kOffset is the Gemma ops' (1 + w).
    for name in ("sum_squares<float, float>", "scale_row<false, false, float, float, float>",
                 "sum_squares<c10::BFloat16, float>", "scale_row<false, false, c10::BFloat16, float, float>",
                 "scale_row<false, true, float, float, float>", "scale_row<false, true, c10::BFloat16, float, float>"):
        assert 0 < float(per_element[name]) < 5, (name, r.stdout)
