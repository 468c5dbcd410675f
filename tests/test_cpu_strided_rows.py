"""The CPU kernels read and write rows where they are, whatever the strides of
the leading dims (q/k views of a fused qkv tensor, views into a larger buffer):
the same bits as the call on contiguous copies, no copy of the rows inside the
call, fresh outputs contiguous, and a strided out= or in-place tensor written
only where its elements are. Rows that are not contiguous themselves (a
column stride) still work, through a copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import spyre_ops

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
EPS = 1e-6


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


# name -> (normalized_shape, builder(generator, dtype) -> a view of x's values in its layout)
LAYOUTS: dict[str, tuple[list[int], Callable[[torch.Generator, torch.dtype], torch.Tensor]]] = {
    # q = qkv[:, :32*128].view(64, 32, 128): row stride 128 within a token, 6144 between tokens
    "q_of_qkv": ([128], lambda g, dt: _randn(g, 64, 3 * 32 * 128).to(dt)[:, : 32 * 128].view(64, 32, 128)),
    "k_of_qkv": ([128], lambda g, dt: _randn(g, 64, 3 * 32 * 128).to(dt)[:, 32 * 128 : 64 * 128].view(64, 32, 128)),
    "row_stride": ([100], lambda g, dt: _randn(g, 9, 133).to(dt)[:, 5:105]),
    "offset_in_buffer": ([64], lambda g, dt: _randn(g, 2000).to(dt).as_strided((7, 64), (200, 1), 37)),
    "transposed_leading_dims": ([48], lambda g, dt: _randn(g, 5, 3, 48).to(dt).transpose(0, 1)),
    "expanded_rows": ([40], lambda g, dt: _randn(g, 40).to(dt).expand(6, 40)),
    "size_one_and_merged_dims": (
        [16], lambda g, dt: _randn(g, 4, 1, 3, 2, 20).to(dt)[..., 2:18].permute(2, 1, 0, 3, 4)),
    "two_row_dims": ([6, 8], lambda g, dt: _randn(g, 5, 4, 6, 8).to(dt)[:, 1:3]),
    # mid-run chunk boundaries of a parallel loop (37 * 7 rows of 128)
    "many_heads": ([128], lambda g, dt: _randn(g, 37, 9, 128).to(dt)[:, 1:8]),
    "long_rows": ([9000], lambda g, dt: _randn(g, 3, 9100).to(dt)[:, 50:9050]),
    # rows that are not contiguous themselves: through a copy
    "column_stride": ([32], lambda g, dt: _randn(g, 6, 64).to(dt)[:, ::2]),
}
# Layouts an op may write (an expanded tensor may not be written).
WRITABLE = [name for name in LAYOUTS if name != "expanded_rows"]


def _case(name: str, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape, build = LAYOUTS[name]
    x = build(g, dtype)
    residual = build(g, dtype)
    weight = (1 + 0.1 * _randn(g, *shape)).to(dtype)
    return x, residual, shape, weight


def _assert_same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got, expected), (got.double() - expected.double()).abs().max().item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_functional_ops_give_the_bits_of_the_contiguous_call(layout, dtype):
    x, r, shape, w = _case(layout, dtype)
    xc, rc = x.contiguous(), r.contiguous()
    for weight in (w, None):
        y = torch.ops.spyre.rms_norm(x, shape, weight, EPS)
        _assert_same_bits(y, torch.ops.spyre.rms_norm(xc, shape, weight, EPS))
        assert y.is_contiguous()
        out, total = torch.ops.spyre.fused_add_rms_norm(x, r, shape, weight, EPS)
        out_c, total_c = torch.ops.spyre.fused_add_rms_norm(xc, rc, shape, weight, EPS)
        _assert_same_bits(out, out_c)
        _assert_same_bits(total, total_c)
        assert out.is_contiguous() and total.is_contiguous()
    # and through the public wrappers
    _assert_same_bits(spyre_ops.rms_norm(x, shape, w, EPS), spyre_ops.rms_norm(xc, shape, w, EPS))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", WRITABLE)
def test_out_and_in_place_write_strided_tensors_only_where_their_elements_are(layout, dtype):
    x, r, shape, w = _case(layout, dtype)
    expected = torch.ops.spyre.rms_norm(x.contiguous(), shape, w, EPS)
    # out= a strided view of another buffer (the layout of a second draw)
    out, _, _, _ = _case(layout, dtype, seed=1)
    base = out._base if out._base is not None else out
    before = base.clone()
    got = torch.ops.spyre.rms_norm.out(x, shape, w, EPS, out=out)
    assert got is out
    _assert_same_bits(out, expected)
    written = torch.zeros_like(base, dtype=torch.bool)
    written.as_strided(out.shape, out.stride(), out.storage_offset() - base.storage_offset()).fill_(True)
    assert torch.equal(base[~written], before[~written])
    # out=x: normalized where it is
    xi = _case(layout, dtype)[0]
    spyre_ops.rms_norm(xi, shape, w, EPS, out=xi)
    _assert_same_bits(xi, expected)
    # the in-place fused op on two views of one buffer that share no memory
    x2, r2 = _disjoint_views(x, r)
    out_c, total_c = torch.ops.spyre.fused_add_rms_norm(x.contiguous(), r.contiguous(), shape, w, EPS)
    spyre_ops.fused_add_rms_norm_(x2, r2, shape, w, EPS)
    _assert_same_bits(x2, out_c)
    _assert_same_bits(r2, total_c)


def _disjoint_views(x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of x and r in their layouts, in two halves of one buffer (x and r
    are views of contiguous tensors of one shape)."""
    n = x._base.numel()
    buf = torch.zeros(2 * n, dtype=x.dtype)
    x2 = buf.as_strided(x.shape, x.stride(), x.storage_offset())
    r2 = buf.as_strided(r.shape, r.stride(), n + r.storage_offset())
    x2.copy_(x)
    r2.copy_(r)
    return x2, r2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_backward_gives_the_bits_of_the_contiguous_call(layout, dtype):
    x, grad, shape, w = _case(layout, dtype)
    got = torch.ops.spyre.rms_norm_backward(grad, x, shape, w, EPS)
    expected = torch.ops.spyre.rms_norm_backward(grad.contiguous(), x.contiguous(), shape, w, EPS)
    for a, b in zip(got, expected):
        _assert_same_bits(a, b)
    assert got[0].is_contiguous()


# What making a contiguous copy of a tensor records in the profiler.
COPIES = {"aten::contiguous", "aten::clone", "aten::copy_", "aten::empty_like"}


def _copies_of(shape: torch.Size, call: Callable[[], object]) -> list[str]:
    """The copy-like ops a call runs on tensors of x's shape."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        call()
    return [e.name for e in prof.events() if e.name in COPIES and list(shape) in e.input_shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["q_of_qkv", "row_stride", "transposed_leading_dims", "two_row_dims"])
def test_no_copy_of_strided_rows(layout, dtype):
    x, r, shape, w = _case(layout, dtype)
    out, _, _, _ = _case(layout, dtype, seed=1)
    x2, r2 = _disjoint_views(x, r)
    calls = {
        "rms_norm": lambda: torch.ops.spyre.rms_norm(x, shape, w, EPS),
        "wrapper": lambda: spyre_ops.rms_norm(x, shape, w, EPS),
        "out": lambda: spyre_ops.rms_norm(x, shape, w, EPS, out=out),
        "out=x": lambda: spyre_ops.rms_norm(out, shape, w, EPS, out=out),
        "fused": lambda: spyre_ops.fused_add_rms_norm(x, r, shape, w, EPS),
        "fused_": lambda: spyre_ops.fused_add_rms_norm_(x2, r2, shape, w, EPS),
        "backward": lambda: torch.ops.spyre.rms_norm_backward(r, x, shape, w, EPS),
    }
    for name, call in calls.items():
        assert _copies_of(x.shape, call) == [], name


def test_the_copy_check_sees_a_copy():
    x, _, shape, w = _case("column_stride", torch.bfloat16)
    assert "aten::contiguous" in _copies_of(x.shape, lambda: torch.ops.spyre.rms_norm(x, shape, w, EPS))
