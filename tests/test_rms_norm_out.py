"""The ``out=`` overload ``spyre::rms_norm.out``: numerics, aliasing, errors, opcheck."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import spyre_ops
from reference import assert_close_to_ref, rms_norm_ref

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _inputs(shape, dtype, weight_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    h = shape[-1]
    w = None if weight_dtype is None else (1 + 0.5 * torch.randn(h, generator=g, dtype=torch.float64)).to(weight_dtype)
    return x, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 7, 16, 33, 100, 1000, 4096, 4099])
@pytest.mark.parametrize("with_weight", [False, True])
def test_out_matches_reference(dtype, cols, with_weight):
    x, w = _inputs((5, cols), dtype, dtype if with_weight else None, seed=cols)
    out = torch.full_like(x, float("nan"))
    y = torch.ops.spyre.rms_norm.out(x, [cols], w, 1e-5, out=out)
    assert y is out
    assert_close_to_ref(out, rms_norm_ref(x, [cols], w, 1e-5))
    # Same kernel as the functional op: identical bits.
    assert torch.equal(out, torch.ops.spyre.rms_norm(x, [cols], w, 1e-5))


def test_out_mixed_weight_dtype_and_trailing_dims():
    x, _ = _inputs((2, 3, 4, 50), torch.bfloat16)
    w = (1 + 0.1 * torch.randn(4, 50, dtype=torch.float64)).float()
    out = torch.empty_like(x)
    spyre_ops.rms_norm(x, (4, 50), w, 1e-6, out=out)
    assert_close_to_ref(out, rms_norm_ref(x, [4, 50], w, 1e-6))


def test_out_noncontiguous_out_and_input():
    x, w = _inputs((64, 48), torch.float32, torch.float32)
    xt = x.t().contiguous().t()  # same values, column-major strides
    out = torch.empty(48, 64).t()  # non-contiguous out
    assert not xt.is_contiguous() and not out.is_contiguous()
    y = spyre_ops.rms_norm(xt, 48, w, out=out)
    assert y is out and out.stride() == (1, 64)
    assert_close_to_ref(out, rms_norm_ref(x, [48], w))


def test_out_may_be_x_itself():
    x, w = _inputs((9, 300), torch.float16, torch.float16)
    expected = spyre_ops.rms_norm(x, 300, w)
    xi = x.clone()
    spyre_ops.rms_norm(xi, 300, w, out=xi)
    assert torch.equal(xi, expected)


def test_out_huge_rows_are_rescued():
    # |x| ~ 1e30 overflows the float32 sum of squares; the kernel rescales the row.
    x = torch.tensor([[1e30, -2e30, 3e30, 4e30]], dtype=torch.float32)
    out = torch.empty_like(x)
    spyre_ops.rms_norm(x, 4, out=out)
    assert_close_to_ref(out, rms_norm_ref(x, [4]))


def test_out_empty():
    x = torch.empty(0, 16)
    out = torch.empty(0, 16)
    assert spyre_ops.rms_norm(x, 16, out=out) is out


OP = "spyre::rms_norm.out"


@pytest.mark.parametrize(
    ("out_factory", "message"),
    [
        (lambda x: torch.empty(4, 9), f"{OP}: out has shape [4, 9] but x has shape [4, 8]"),
        (lambda x: torch.empty(8, 4), f"{OP}: out has shape [8, 4] but x has shape [4, 8]"),
        (lambda x: torch.empty(4, 8, dtype=torch.float16),
         f"{OP}: out has dtype torch.float16 but x has dtype torch.float32"),
        (lambda x: torch.empty(4, 8, device="meta"),
         f"{OP}: out is on meta but x is on cpu; all tensors must be on the same device"),
    ],
)
def test_out_errors_name_the_argument(out_factory, message):
    x = torch.randn(4, 8)
    out = out_factory(x)
    with pytest.raises(RuntimeError) as eager:
        torch.ops.spyre.rms_norm.out(x, [8], None, 1e-5, out=out)
    assert message in str(eager.value)
    # The fake kernel (torch.compile's view) raises the same message.
    if out.device.type == "cpu":
        with FakeTensorMode() as mode, pytest.raises(RuntimeError) as fake:
            torch.ops.spyre.rms_norm.out(
                mode.from_tensor(x), [8], None, 1e-5, out=mode.from_tensor(out)
            )
        assert message in str(fake.value)


@pytest.mark.parametrize("which", ["x", "weight", "out"])
def test_out_refuses_inputs_that_require_grad(which):
    x, w, out = torch.randn(2, 8), torch.randn(8), torch.empty(2, 8)
    {"x": x, "weight": w, "out": out}[which].requires_grad_()
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: out= is not differentiable"):
        spyre_ops.rms_norm(x, 8, w, out=out)
    with torch.no_grad():
        assert spyre_ops.rms_norm(x, 8, w, out=out) is out
    assert_close_to_ref(out.detach(), rms_norm_ref(x, [8], w))


def test_out_bumps_the_version_of_out():
    x, out = torch.randn(2, 8), torch.empty(2, 8)
    before = out._version
    spyre_ops.rms_norm(x, 8, out=out)
    assert out._version > before


def test_out_partial_overlap_is_refused():
    base = torch.randn(5, 8)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: out overlaps x without being x"):
        torch.ops.spyre.rms_norm.out(base[:4], [8], None, 1e-5, out=base[1:])
    square = torch.randn(8, 8)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: out overlaps x without being x"):
        torch.ops.spyre.rms_norm.out(square, [8], None, 1e-5, out=square.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_out_opcheck(dtype):
    x, w = _inputs((3, 5, 64), dtype, dtype)
    out = torch.empty_like(x)
    torch.library.opcheck(torch.ops.spyre.rms_norm.out, (x, [64], w, 1e-5), {"out": out})
    torch.library.opcheck(torch.ops.spyre.rms_norm.out, (x, [5, 64], None, 1e-6), {"out": out})


def test_out_under_compile():
    def f(x, w, out):
        spyre_ops.rms_norm(x, x.shape[-1], w, 1e-5, out=out)
        return out * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    x, w = _inputs((6, 40), torch.float32, torch.float32)
    out = torch.empty_like(x)
    got = compiled(x, w, out)
    expected = rms_norm_ref(x, [40], w)
    assert_close_to_ref(out, expected)
    assert_close_to_ref(got, 2 * expected)


@pytest.mark.parametrize(("dtype", "rows"), [(torch.float32, 1024), (torch.bfloat16, 2048)])
@pytest.mark.parametrize("aligned", [True, False])
def test_large_outputs_written_with_streaming_stores(dtype, rows, aligned):
    # >= 16 MiB of output takes the kernel's streaming-store path; an output whose
    # rows are not 64-byte aligned takes the ordinary stores for every row.
    cols = 4096
    x, w = _inputs((rows, cols), dtype, dtype, seed=rows)
    buf = torch.empty(rows * cols + 1, dtype=dtype)
    out = (buf[:-1] if aligned else buf[1:]).view(rows, cols)
    spyre_ops.rms_norm(x, cols, w, out=out)
    assert_close_to_ref(out, rms_norm_ref(x, [cols], w))
    assert torch.equal(out, spyre_ops.rms_norm(x, cols, w))
    r = torch.randn(rows, cols, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected_out, expected_sum = spyre_ops.fused_add_rms_norm(x, r, cols, w)
    xi, ri = x.clone(), r.clone()
    spyre_ops.fused_add_rms_norm_(xi, ri, cols, w)
    assert torch.equal(xi, expected_out) and torch.equal(ri, expected_sum)
