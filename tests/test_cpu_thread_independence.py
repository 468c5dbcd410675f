"""CPU kernel results do not depend on the thread count, and use the built SIMD capability.

Each row is reduced by one thread in a fixed order (long rows in blocks), and
each weight-gradient column over the rows in a fixed order, so 1 and 2 threads
must give identical bits, for contiguous and strided rows alike. The runs happen in fresh subprocesses, where
``torch.set_num_threads`` takes effect before any parallel region.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import spyre_ops
from spyre_ops import _C

SCRIPT = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
import spyre_ops
assert torch.get_num_threads() == int(sys.argv[1])
results = {}
for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
    g = torch.Generator().manual_seed(7)
    x = (2 * torch.randn(300, 1037, generator=g)).to(dtype)
    r = torch.randn(300, 1037, generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(1037, generator=g)).to(dtype)
    name = str(dtype)
    results[name + " rms_norm"] = spyre_ops.rms_norm(x, 1037, w)
    out = torch.empty_like(x)
    results[name + " rms_norm.out"] = spyre_ops.rms_norm(x, 1037, None, out=out)
    results[name + " fused"] = torch.stack(spyre_ops.fused_add_rms_norm(x, r, 1037, w))
    xi, ri = x.clone(), r.clone()
    spyre_ops.fused_add_rms_norm_(xi, ri, 1037, w)
    results[name + " fused_"] = torch.stack([xi, ri])
    grads = torch.ops.spyre.rms_norm_backward(r, x, [1037], w, 1e-5)
    results[name + " backward"] = torch.cat([t.flatten() for t in grads])
    q = (2 * torch.randn(40, 3 * 8 * 64, generator=g)).to(dtype)[:, 8 * 64 : 16 * 64].view(40, 8, 64)
    results[name + " strided"] = spyre_ops.rms_norm(q, 64, w[:64])
    long = torch.randn(4, 20000, generator=g).to(dtype)
    results[name + " long"] = spyre_ops.rms_norm(long, 20000, None)
    results[name + " long backward"] = torch.cat(
        [t.flatten() for t in torch.ops.spyre.rms_norm_backward(long, long, [20000], long[0], 1e-5)])
torch.save(results, sys.argv[2])
"""


def _run(threads: int, path: Path) -> dict[str, torch.Tensor]:
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), str(path)],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        cwd=Path(__file__).resolve().parent.parent,
    )
    return torch.load(path)


def test_one_and_two_threads_give_identical_bits(tmp_path):
    one = _run(1, tmp_path / "one.pt")
    two = _run(2, tmp_path / "two.pt")
    assert one.keys() == two.keys() and len(one) == 4 * 8
    for key in one:
        assert torch.equal(one[key], two[key]), key
    # And the same bits as this process computes with its own thread count.
    x = (2 * torch.randn(300, 1037, generator=torch.Generator().manual_seed(7))).float()
    assert torch.isfinite(one["torch.float32 rms_norm"]).all()
    assert one["torch.float32 rms_norm"].shape == x.shape


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_built_capability_uses_simd_when_the_build_machine_has_it():
    capability = _C.cpu_capability()
    assert capability in ("avx512+bf16", "avx512", "avx2", "default")
    chosen = os.environ.get("SPYRE_OPS_CPU_CAPABILITY", "auto")
    if chosen == "auto" and os.environ.get("SPYRE_OPS_NATIVE") != "0":
        flags = _cpu_flags()
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"} <= flags:
            bf16 = "avx512_bf16" in flags and os.environ.get("SPYRE_OPS_AVX512_BF16") != "0"
            assert capability == ("avx512+bf16" if bf16 else "avx512")
        elif {"avx2", "fma", "f16c"} <= flags:
            assert capability == "avx2"
    assert spyre_ops.rms_norm(torch.full((1, 3), 2.0), 3, eps=0.0).eq(1).all()
