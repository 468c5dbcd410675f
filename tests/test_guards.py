"""Guards against bugs the rest of the suite let through (issue 10's mutation check).

Each test holds a kernel to something a plausible bug breaks and the tolerances
elsewhere hide: 16-bit outputs rounded to nearest (not truncated), the fused op
normalizing the *rounded* sum, the backward using eps, the fake backward's
dtypes, gradients against an independent float64 reference (never against the
op itself), and the kernels running on more than one thread.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest
import torch
from reference import fused_add_rms_norm_ref, rms_norm_ref
from subprocess_python import run_python
from torch._subclasses.fake_tensor import FakeTensorMode

import spyre_ops
from spyre_ops import _C

MANTISSA_BITS = {torch.bfloat16: 8, torch.float16: 11}


def assert_correctly_rounded(actual: torch.Tensor, ref: torch.Tensor) -> None:
    """|actual - ref| <= half an ulp of actual's dtype at ref, plus float32 arithmetic slack.

    A kernel that computes in float32 and rounds once to nearest meets it; one
    that truncates, or rounds twice, is off by up to a whole ulp on a fraction
    of the elements.
    """
    dtype = actual.dtype
    ref = ref.double()
    exponent = torch.floor(torch.log2(ref.abs().clamp_min(torch.finfo(dtype).tiny)))
    half_ulp = torch.pow(2.0, exponent - MANTISSA_BITS[dtype])
    bound = half_ulp + 1e-6 * ref.abs()
    err = (actual.double() - ref).abs()
    bad = err > bound
    assert not bad.any(), (
        f"{int(bad.sum())} of {bad.numel()} {dtype} outputs are not the float64 result rounded to nearest; "
        f"worst error {float((err / half_ulp).max()):.3f} half-ulps"
    )


def _inputs(rows: int, cols: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = (4 * torch.randn(rows, cols, generator=g)).to(dtype)
    r = torch.randn(rows, cols, generator=g).to(dtype)
    w = (0.5 + torch.rand(cols, generator=g)).to(dtype)
    return x, r, w


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cols", [2, 5, 64, 1037])
@pytest.mark.parametrize("with_weight", [True, False])
def test_16bit_outputs_are_rounded_to_nearest(dtype, cols, with_weight):
    x, r, w = _inputs(max(8, 4096 // cols), cols, dtype, seed=cols)
    w = w if with_weight else None
    ref = rms_norm_ref(x, [cols], w, 1e-6)
    assert_correctly_rounded(spyre_ops.rms_norm(x, cols, w, 1e-6), ref)
    out = torch.empty_like(x)
    assert_correctly_rounded(spyre_ops.rms_norm(x, cols, w, 1e-6, out=out), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cols", [2, 5, 64, 1037])
def test_fused_op_normalizes_the_rounded_sum(dtype, cols):
    # x is 4x the residual, so most sums x + residual are not representable in
    # dtype: normalizing the unrounded sum is off by up to an ulp.
    x, r, w = _inputs(max(8, 4096 // cols), cols, dtype, seed=100 + cols)
    ref_out, ref_sum = fused_add_rms_norm_ref(x, r, [cols], w, 1e-6)
    out, summed = spyre_ops.fused_add_rms_norm(x, r, cols, w, 1e-6)
    assert torch.equal(summed, ref_sum)
    assert_correctly_rounded(out, ref_out)
    xi, ri = x.clone(), r.clone()
    spyre_ops.fused_add_rms_norm_(xi, ri, cols, w, 1e-6)
    assert torch.equal(ri, ref_sum)
    assert_correctly_rounded(xi, ref_out)


def _reference_grads(x, w, grad, eps):
    xd = x.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_() if w is not None else None
    y = rms_norm_ref(xd, [x.shape[-1]], wd, eps)
    inputs = (xd, wd) if w is not None else (xd,)
    return torch.autograd.grad(y, inputs, grad.double())


@pytest.mark.parametrize("scale,eps", [(1e-3, 1e-5), (1e-3, 1e-6), (1.0, 0.5), (1.0, 3.0)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_backward_uses_eps(scale, eps, dtype, tol):
    # mean(x^2) is ~ scale^2: eps matters at each of these (scale, eps) pairs.
    g = torch.Generator().manual_seed(3)
    x = (scale * torch.randn(5, 48, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    w = (0.5 + torch.rand(48, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    grad = torch.randn(5, 48, generator=g, dtype=torch.float64).to(dtype)
    gx, gw = torch.autograd.grad(spyre_ops.rms_norm(x, 48, w, eps), (x, w), grad)
    rx, rw = _reference_grads(x, w, grad, eps)
    torch.testing.assert_close(gx.double(), rx, atol=tol * rx.abs().max().item(), rtol=tol)
    torch.testing.assert_close(gw.double(), rw, atol=tol * rw.abs().max().item(), rtol=tol)
    # The fused op's gradient, through its normalized output, is the same function of the sum.
    xr = torch.zeros_like(x).requires_grad_()
    out, _ = spyre_ops.fused_add_rms_norm(x, xr, 48, w, eps)
    fx, fr = torch.autograd.grad(out, (x, xr), grad)
    torch.testing.assert_close(fx.double(), rx, atol=tol * rx.abs().max().item(), rtol=tol)
    torch.testing.assert_close(fr.double(), rx, atol=tol * rx.abs().max().item(), rtol=tol)


@pytest.mark.parametrize(
    "x_dtype,w_dtype",
    [(torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16),
     (torch.float32, torch.float32), (torch.float64, torch.float64), (torch.float16, None)],
)
def test_fake_backward_matches_the_real_kernel(x_dtype, w_dtype):
    x = torch.randn(3, 4, 16).to(x_dtype)
    g = torch.randn(3, 4, 16).to(x_dtype)
    w = torch.rand(16).to(w_dtype) if w_dtype is not None else None
    real = torch.ops.spyre.rms_norm_backward(g, x, [16], w, 1e-5)
    with FakeTensorMode() as mode:
        fake = torch.ops.spyre.rms_norm_backward(
            mode.from_tensor(g), mode.from_tensor(x), [16], None if w is None else mode.from_tensor(w), 1e-5
        )
    for r, f, name in zip(real, fake, ("grad_x", "grad_weight")):
        assert (f.dtype, f.shape, f.stride(), f.device) == (r.dtype, r.shape, r.stride(), r.device), name
    assert real[0].dtype == x_dtype
    if w_dtype is not None:
        assert real[1].dtype == w_dtype


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_bf16_training_gradients_match_the_reference(backend):
    from torch._inductor.utils import fresh_cache

    norm = spyre_ops.nn.RMSNorm(64, eps=1e-5)  # float32 weight, bf16 activations
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(12, 64, generator=g).to(torch.bfloat16).requires_grad_()
    grad = torch.randn(12, 64, generator=g).to(torch.bfloat16)
    with fresh_cache():  # nothing compiled by an earlier run (or another fake kernel) is reused
        compiled = torch.compile(norm, backend=backend, fullgraph=True)
        compiled(x).backward(grad)
    assert norm.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    rx, rw = _reference_grads(x, norm.weight, grad, 1e-5)
    torch.testing.assert_close(x.grad.double(), rx, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(norm.weight.grad.double(), rw, atol=1e-3 * rw.abs().max().item(), rtol=1e-3)


def test_compiled_gradients_match_the_reference():
    norm = spyre_ops.nn.RMSNorm(32, eps=1e-4, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (1e-2 * torch.randn(6, 32, dtype=torch.float64)).requires_grad_()
    r = torch.randn(6, 32, dtype=torch.float64).requires_grad_()
    grad = torch.randn(6, 32, dtype=torch.float64)
    compiled = torch.compile(lambda x, r: norm(x, r)[0], backend="aot_eager", fullgraph=True)
    gx, gr, gw = torch.autograd.grad(compiled(x, r), (x, r, norm.weight), grad)

    # The independent float64 reference, differentiated by torch.autograd.
    xd, rd, wd = (t.detach().clone().requires_grad_() for t in (x, r, norm.weight))
    y, _ = fused_add_rms_norm_ref(xd, rd, [32], wd, 1e-4)
    ex, er, ew = torch.autograd.grad(y, (xd, rd, wd), grad)
    for got, expected in ((gx, ex), (gr, er), (gw, ew)):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_and_functional_match_the_reference(dtype):
    x, r, w = _inputs(9, 300, dtype, seed=5)
    ref_out, ref_sum = fused_add_rms_norm_ref(x, r, [300], w, 1e-5)
    xi, ri = x.clone(), r.clone()
    spyre_ops.fused_add_rms_norm_(xi, ri, 300, w, 1e-5)
    out, summed = spyre_ops.fused_add_rms_norm(x, r, 300, w, 1e-5)
    for got_out, got_sum in ((xi, ri), (out, summed)):
        assert torch.equal(got_sum, ref_sum)
        if dtype == torch.float32:
            torch.testing.assert_close(got_out.double(), ref_out, atol=1e-5, rtol=1e-5)
        else:
            assert_correctly_rounded(got_out, ref_out)


def test_rms_norm_schema_is_what_custom_op_infers_from_torch_spyres_signature():
    # torch-spyre defines spyre::rms_norm with torch.library.custom_op on a Python
    # function with this signature (FACTS.md); custom_op derives the schema from
    # it. Ours must be identical to what that derivation gives, or adoption fails.
    def rms_norm(
        x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None, eps: float = 1e-05
    ) -> torch.Tensor:
        raise NotImplementedError

    inferred = torch.library.infer_schema(rms_norm, mutates_args=())
    theirs = torch._C.parse_schema("spyre::rms_norm" + inferred)
    ours = torch.ops.spyre.rms_norm.default._schema
    assert str(ours) == str(theirs)
    assert [a.name for a in ours.arguments] == ["x", "normalized_shape", "weight", "eps"]


def test_reimporting_the_registration_module_reruns_registration_harmlessly():
    proc = run_python(
        """
        import importlib, torch, spyre_ops
        from spyre_ops import _library
        assert _library.adopted == [], _library.adopted   # first import: defined here
        importlib.reload(_library)                          # re-runs define-or-adopt and kernel registration
        assert sorted(_library.adopted) == sorted(_library.SCHEMAS), _library.adopted
        x = torch.tensor([[3.0, 4.0]])
        y = torch.ops.spyre.rms_norm(x, [2], None, 0.0)
        expected = x / (12.5 ** 0.5)
        assert torch.allclose(y, expected, rtol=1e-6, atol=0), y
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"


THREADS_SCRIPT = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
import spyre_ops

def cpu_ticks():
    ticks = {}
    for tid in __import__("os").listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks

x = torch.randn(4096, 4096)
spyre_ops.rms_norm(x, 4096)  # starts the thread pool
before = cpu_ticks()
for _ in range(15):
    spyre_ops.rms_norm(x, 4096)
after = cpu_ticks()
busy = [tid for tid in after if after[tid] - before.get(tid, 0) >= 3]
print(len(busy))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kernel_runs_on_more_than_one_thread():
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch is not built with OpenMP")
    # Built with -fopenmp, the module calls into libgomp for at::parallel_for ...
    nm = subprocess.run(["nm", "-D", "--undefined-only", _C.__file__], capture_output=True, text=True)
    if nm.returncode == 0:
        assert "GOMP_parallel" in nm.stdout, "spyre_ops._C was built without -fopenmp"
    # ... and with 2 threads, 2 threads do the work (only CPU time is read: a
    # thread that ran its half of the rows has used some).
    proc = run_python(THREADS_SCRIPT, "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) >= 2, proc.stdout


def test_this_process_gives_the_same_bits_as_fresh_processes(tmp_path):
    # The in-process half of tests/test_cpu_thread_independence.py: the same
    # computations here (with this process's thread count and state) must give
    # the bits a fresh 2-thread process gives, and those must be right.
    from test_cpu_thread_independence import SCRIPT, _run

    fresh = _run(2, tmp_path / "two.pt")
    namespace = {"torch": torch, "spyre_ops": spyre_ops}
    exec(SCRIPT[SCRIPT.index("results = {}"):SCRIPT.index("torch.save(")], namespace)
    here = namespace["results"]
    assert here.keys() == fresh.keys() and len(here) == 32
    for key in here:
        assert torch.equal(here[key], fresh[key]), key
    g = torch.Generator().manual_seed(7)
    x = 2 * torch.randn(300, 1037, generator=g)
    torch.randn(300, 1037, generator=g)
    w = 1 + 0.1 * torch.randn(1037, generator=g)
    torch.testing.assert_close(here["torch.float32 rms_norm"].double(), rms_norm_ref(x, [1037], w), atol=1e-5, rtol=1e-5)
