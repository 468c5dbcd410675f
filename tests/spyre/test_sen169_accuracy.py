"""The Spyre formula judged in SEN169, the device's format for float16/bfloat16.

Each row goes to the emulated device as float16 (SEN169 codes), through the
Spyre kernel of rms_norm / fused_add_rms_norm / fused_add_rms_norm_, and back
decoded; the float64 reference runs on the same SEN169 inputs. Alongside, the
plain formula x * rsqrt(mean(x*x) + eps) * w as aten ops on the same device,
to show where it breaks there: x*x leaves SEN169's range (8.57e9) past
|x| = 9.27e4, which Gemma 3 270M's residual stream reaches (1.04e5).
Tolerances: spyre_tolerances.SEN169_NORM_RTOL (8 roundings of 2**-10).
"""

from __future__ import annotations

import math

import pytest
import torch
from norm_inputs import MODELS, captured
from reference import fused_add_rms_norm_ref, rms_norm_ref
from spyre_tolerances import SEN169_NORM_RTOL, sen169_relative_error

import spyre_ops

SQUARE_LIMIT = math.sqrt(2.0 ** 32 * (1 + 510 / 512))  # 9.27e4: x*x beyond it is NINF in SEN169


def on_device(t: torch.Tensor) -> torch.Tensor:
    """t (fp32) as a float16 spyre tensor: rounded once to SEN169 on the device (the host's
    IEEE fp16 would turn |t| > 65504 into Inf before the device sees it)."""
    return t.float().to("spyre").to(torch.float16)


def held(d: torch.Tensor) -> torch.Tensor:
    """The values a spyre 16-bit tensor holds (decoded on the device, so beyond fp16's range too)."""
    return d.to(torch.float32).cpu()


def plain(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def judge(x: torch.Tensor, w: torch.Tensor, eps: float) -> tuple[float, float]:
    """(relative error of spyre_ops.rms_norm, of the plain formula) on the device vs float64."""
    xd, wd = on_device(x), on_device(w)
    assert bool(torch.isfinite(held(xd)).all()), "a row SEN169 can hold must reach the device whole"
    ref = rms_norm_ref(held(xd), [x.shape[-1]], held(wd), eps)
    ours = sen169_relative_error(held(spyre_ops.rms_norm(xd, x.shape[-1], wd, eps)), ref)
    return ours, sen169_relative_error(held(plain(xd, wd, eps)), ref)


def model_rows(model: str) -> dict:
    if not (MODELS / model / "model.safetensors").exists():
        pytest.fail(f"{MODELS / model} is missing: run `make models` (the tests need the real models)")
    return captured(model)


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_every_norm_input_of_the_real_models(spyre_device, model):
    table = {}
    for key, (x, w, eps) in model_rows(model).items():
        table[key] = judge(x, w, eps)
        big = x.abs().amax(-1) > SQUARE_LIMIT
        if bool(big.any()):
            # The rows that square past SEN169's range: the plain formula breaks on them, ours does not.
            ours_big, plain_big = judge(x[big], w, eps)
            table[key + " |x|>9.27e4"] = (ours_big, plain_big)
            assert plain_big > SEN169_NORM_RTOL, (key, plain_big)
    print(f"\n{model}: (ours, plain) max relative error")
    for key, errs in table.items():
        print(f"  {key}: {errs[0]:.2e} {errs[1]:.2e}")
    assert all(ours <= SEN169_NORM_RTOL for ours, _ in table.values()), table
    if model == "gemma-3-270m":
        assert any(key.endswith("9.27e4") for key in table), "Gemma's 1e5 rows are missing from the capture"


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_fused_add_on_the_real_residual_stream(spyre_device, model):
    for key, (h, w, eps) in model_rows(model).items():
        if "input_layernorm" not in key:
            continue
        x, residual = on_device(h.roll(1, 0) * 0.125), on_device(h)
        xs, rs, wd = held(x), held(residual), on_device(w)
        y, r = spyre_ops.fused_add_rms_norm(x, residual, h.shape[-1], wd, eps)
        _, sum_ref = fused_add_rms_norm_ref(xs, rs, [h.shape[-1]], None, eps)
        assert sen169_relative_error(held(r), sum_ref) <= 2 * 2.0 ** -10
        ref = rms_norm_ref(held(r), [h.shape[-1]], held(wd), eps)
        assert sen169_relative_error(held(y), ref) <= SEN169_NORM_RTOL, key
        spyre_ops.fused_add_rms_norm_(x, residual, h.shape[-1], wd, eps)
        assert torch.equal(held(x), held(y)) and torch.equal(held(residual), held(r)), key


HIDDEN = 256


def synthetic(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    r = torch.randn(4, HIDDEN, generator=g)
    if kind == "outlier at SEN169's max":
        r[:, 5] = 8.5e9
    elif kind == "all near SEN169's max":
        r = r.sign() * 8e9
    elif kind == "Gemma-like 1e5":
        r = r / r.abs().amax(-1, keepdim=True) * 1.04e5
    elif kind == "tiny (1e-8)":
        r = r * 1e-8
    elif kind == "near SEN169's min (1e-9)":
        r = r.sign() * 1e-9
    elif kind == "zero":
        r = torch.zeros(4, HIDDEN)
    return r


SYNTHETIC = ["ordinary", "outlier at SEN169's max", "all near SEN169's max", "Gemma-like 1e5", "tiny (1e-8)",
             "near SEN169's min (1e-9)", "zero"]


#: A zero row with eps 0 is 0/0, which the definition leaves without a value: not a case.
EPSILONS = (0.0, 1e-30, 1e-6, 1.0, 1e10, 1e30)
CASES = [(kind, eps) for kind in SYNTHETIC for eps in EPSILONS if (kind, eps) != ("zero", 0.0)]


@pytest.mark.parametrize(("kind", "eps"), CASES)
def test_synthetic_rows(spyre_device, kind, eps):
    x = synthetic(kind)
    w = torch.rand(HIDDEN, generator=torch.Generator().manual_seed(3)) + 0.5
    ours, plain_err = judge(x, w, eps)
    print(f"\n{kind} eps={eps:g}: ours {ours:.2e} plain {plain_err:.2e}")
    assert ours <= SEN169_NORM_RTOL


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_inf_and_nan_rows_are_nan_rows(spyre_device, bad):
    # SEN169 has one code for Inf and NaN (NINF), decoded as NaN: a row holding either
    # is a NaN row on the device, and its output row is NaN; the other rows are untouched.
    x = synthetic("ordinary")
    x[1, 3] = bad
    w = torch.ones(HIDDEN)
    xd = on_device(x)
    y = held(spyre_ops.rms_norm(xd, HIDDEN, on_device(w), 1e-6))
    assert bool(torch.isnan(y[1]).all())
    ref = rms_norm_ref(held(xd)[[0, 2, 3]], [HIDDEN], w, 1e-6)
    assert sen169_relative_error(y[[0, 2, 3]], ref) <= SEN169_NORM_RTOL
