"""Numerics of the Spyre kernels on the emulated device against the float64 reference.

The kernels compute in fp16 by default, which Spyre (and the emulated device)
holds as SEN169; references take the values the device holds (held()). The
outlier rows here were chosen for IEEE fp16's limits (|x| in the hundreds to
60000, ~1e-3); SEN169's own limits are in test_sen169_accuracy.py.
"""

from __future__ import annotations

import pytest
import torch
from reference import rms_norm_ref
from spyre_tolerances import assert_close, device_sum, held

import spyre_ops

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
COMPUTE = [torch.float16, torch.float32]

#: (tokens, hidden): a sample of 1..2048 tokens x 64..8192 hidden, including
#: hidden sizes that are not whole 64-element Spyre sticks.
SHAPES = [(1, 8192), (3, 64), (17, 100), (64, 4096), (2048, 64), (512, 2048)]


def outlier_rows(hidden: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Rows of very different magnitudes, as LLM hidden states have them.

    Row max-abs values from 1e-3 to 60000 (fp16's top is 65504), a row of
    ordinary values with one 60000 outlier channel, and an all-zero row.
    """
    g = torch.Generator().manual_seed(seed)
    scales = [1e-3, 3e-3, 1.0, 300.0, 3000.0, 60000.0]
    rows = []
    for s in scales:
        r = torch.randn(hidden, generator=g, dtype=torch.float64)
        rows.append(r / r.abs().max() * s)
    spike = torch.randn(hidden, generator=g, dtype=torch.float64)
    spike[hidden // 3] = 60000.0
    rows.append(spike)
    rows.append(torch.zeros(hidden, dtype=torch.float64))
    return torch.stack(rows).to(dtype)


def weight_for(hidden: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(hidden, generator=g, dtype=torch.float64) + 0.5).to(dtype)


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_outlier_and_tiny_rows(spyre_device, dtype, compute, with_weight):
    x = outlier_rows(4096, dtype)
    w = weight_for(4096, dtype) if with_weight else None
    with spyre_ops.spyre.use_compute_dtype(compute):
        xd, wd = x.to(spyre_device), None if w is None else w.to(spyre_device)
        y = spyre_ops.rms_norm(xd, 4096, wd, eps=1e-6)
    assert y.device.type == "spyre" and y.dtype == dtype and y.is_contiguous()
    assert_close(y, rms_norm_ref(held(xd), [4096], None if wd is None else held(wd), 1e-6), dtype, compute)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_values_beyond_fp16_range(spyre_device, dtype):
    # bf16 and fp32 can hold values fp16 cannot; with fp16 compute they are
    # scaled in their own dtype before the conversion.
    x = outlier_rows(1024, torch.float64) * 1e3
    x[0, 5] = 3e5
    x = x.to(dtype)
    xd = x.to(spyre_device)
    y = spyre_ops.rms_norm(xd, 1024)
    assert torch.isfinite(y.cpu()).all()
    assert_close(y, rms_norm_ref(held(xd), [1024]), dtype, torch.float16)


def test_plain_fp16_formula_fails_on_these_rows():
    # The reason for the scaling: the unscaled formula in fp16 overflows on the
    # large rows and loses the tiny ones. (Guards the test data: if it did not
    # fail, the rows above would prove nothing.)
    x = outlier_rows(4096, torch.float16)
    plain = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    with pytest.raises(AssertionError):
        assert_close(plain, rms_norm_ref(x, [4096], None, 1e-6), torch.float16, torch.float16)


@pytest.mark.parametrize("tokens, hidden", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes(spyre_device, tokens, hidden, dtype):
    g = torch.Generator().manual_seed(tokens * 10007 + hidden)
    x = (torch.randn(tokens, hidden, generator=g) * 3).to(dtype)
    w = weight_for(hidden, torch.float32)  # an fp32 weight, whatever x's dtype
    xd = x.to(spyre_device)
    y = spyre_ops.rms_norm(xd, hidden, w.to(spyre_device))
    assert y.shape == x.shape and y.device.type == "spyre"
    assert_close(y, rms_norm_ref(held(xd), [hidden], w), dtype, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous(spyre_device, dtype):
    base = outlier_rows(256, torch.float32).repeat(3, 2).to(dtype)  # (24, 512)
    xs = base.to(spyre_device)
    cases = {
        "column slice": (xs[:, ::2], held(xs)[:, ::2]),
        "transposed 3-d": (xs.view(4, 6, 512).transpose(0, 1), held(xs).view(4, 6, 512).transpose(0, 1)),
        "row slice": (xs[1::3], held(xs)[1::3]),
    }
    for name, (x_dev, x_host) in cases.items():
        hidden = x_host.shape[-1]
        y = spyre_ops.rms_norm(x_dev, hidden)
        assert y.is_contiguous(), name
        assert_close(y, rms_norm_ref(x_host, [hidden]), dtype, torch.float16)


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add(spyre_device, dtype, compute):
    x = outlier_rows(512, dtype, seed=3)
    residual = (outlier_rows(512, torch.float32, seed=4) / 16).to(dtype)  # sums stay < 65504
    w = weight_for(512, dtype)
    xd, rd, wd = x.to(spyre_device), residual.to(spyre_device), w.to(spyre_device)
    with spyre_ops.spyre.use_compute_dtype(compute):
        out, summed = spyre_ops.fused_add_rms_norm(xd, rd, 512, wd)
    # The sum is rounded once to x's dtype as the device holds it (SEN169 for 16-bit): exactly equal.
    ref_sum = device_sum(xd, rd)
    torch.testing.assert_close(held(summed).double(), ref_sum, atol=0, rtol=0)
    assert_close(out, rms_norm_ref(ref_sum, [512], held(wd)), dtype, compute)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_in_place(spyre_device, dtype):
    x = outlier_rows(512, dtype, seed=5)
    residual = (outlier_rows(512, torch.float32, seed=6) / 16).to(dtype)
    x_dev, r_dev = x.to(spyre_device), residual.to(spyre_device)
    x_ptr, r_ptr = x_dev.data_ptr(), r_dev.data_ptr()
    ref_sum = device_sum(x_dev, r_dev)
    spyre_ops.fused_add_rms_norm_(x_dev, r_dev, 512, None)
    assert (x_dev.data_ptr(), r_dev.data_ptr()) == (x_ptr, r_ptr)
    torch.testing.assert_close(held(r_dev).double(), ref_sum, atol=0, rtol=0)
    assert_close(x_dev, rms_norm_ref(ref_sum, [512], None), dtype, torch.float16)


def test_float64_is_computed_in_float64(spyre_device):
    x = outlier_rows(256, torch.float64)
    y = spyre_ops.rms_norm(x.to(spyre_device), 256)
    assert_close(y, rms_norm_ref(x, [256]), torch.float64, torch.float16)


def test_matches_cpu_kernel_with_float32_compute(spyre_device):
    x = torch.randn(33, 320, dtype=torch.float32)
    w = weight_for(320, torch.float32)
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        y = spyre_ops.rms_norm(x.to(spyre_device), 320, w.to(spyre_device))
    torch.testing.assert_close(y.cpu(), spyre_ops.rms_norm(x, 320, w), atol=1e-6, rtol=1e-6)


def test_compute_dtype_policy():
    assert spyre_ops.spyre.compute_dtype() == torch.float16
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        assert spyre_ops.spyre.compute_dtype() == torch.float32
    assert spyre_ops.spyre.compute_dtype() == torch.float16
    with pytest.raises(ValueError, match="torch.float16 or torch.float32, got torch.bfloat16"):
        spyre_ops.spyre.set_compute_dtype(torch.bfloat16)


def test_empty_input(spyre_device):
    y = spyre_ops.rms_norm(torch.empty(0, 64, device=spyre_device, dtype=torch.float16), 64)
    assert y.shape == (0, 64) and y.device.type == "spyre"
