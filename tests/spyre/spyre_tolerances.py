"""Tolerances for the Spyre kernels, by (input dtype, compute dtype).

With fp16 compute (the default) the result has fp16 accuracy whatever the
input dtype, so float16 and float32 inputs are held to vLLM's tolerance for
this op in fp16 (atol 1e-2, rtol 2e-3); bfloat16 outputs to the bf16 tolerance
of tests/reference.py, since rounding the exact result to bf16 alone may cost a
relative 2**-9. With float32 compute each output dtype gets the tolerance of
tests/reference.py, as the CPU kernels do.
"""

from __future__ import annotations

import sen169_reference
import torch
from reference import TOLERANCES

#: fp16 compute on the device is SEN169 (9 mantissa bits): vLLM's atol for RMSNorm in fp16
#: (1e-2), and the rtol of SEN169_NORM_RTOL below (8 roundings of 2**-10) instead of its 2e-3.
FP16_COMPUTE = (1e-2, 8 * 2.0 ** -10)


def tolerance(x_dtype: torch.dtype, compute: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for the output of a Spyre kernel on x_dtype input."""
    if x_dtype == torch.float64 or compute == torch.float32:
        return TOLERANCES[x_dtype]
    if x_dtype == torch.bfloat16:
        return TOLERANCES[torch.bfloat16]
    return FP16_COMPUTE


def as_device_holds(expected: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reference for a 16-bit x on the device: SEN169 has one code for Inf and NaN, so a
    row holding +-Inf is a NaN row there."""
    if x.dtype not in (torch.float16, torch.bfloat16):
        return expected
    rows = torch.isinf(x).any(-1, keepdim=True)
    return torch.where(rows, torch.full_like(expected, float("nan")), expected)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, x_dtype: torch.dtype, compute: torch.dtype) -> None:
    """Compares a Spyre kernel's output (any device) with a float64 reference."""
    atol, rtol = tolerance(x_dtype, compute)
    torch.testing.assert_close(actual.cpu().double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True)

#: SEN169 (how Spyre holds float16 and bfloat16) keeps 9 mantissa bits: one
#: rounding (half away from zero) costs at most a relative 2**-10, its unit roundoff.
SEN169_UNIT_ROUNDOFF = 2.0 ** -10
#: The emulated device rounds every op's output once to SEN169 (fp32 inside the
#: op). An RMSNorm element passes through at most 8 rounded ops in sequence
#: (input scale, square, mean, + eps, rsqrt, x * r, * w, and one spare for a
#: formula's extra step); products and sums of positives compound relative errors,
#: so (1 + u)^8 - 1 ~ 8u bounds each element's relative error.
SEN169_NORM_RTOL = 8 * SEN169_UNIT_ROUNDOFF
#: Results below SEN169's smallest nonzero magnitude, 2**-31 * (1 + 1/512), are 0 on the device.
SEN169_ATOL = 2.0 ** -30


def sen169_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest elementwise |actual - expected| / |expected| (float64), errors below SEN169_ATOL ignored;
    NaN where expected is NaN counts as right, any other non-finite mismatch as inf."""
    a, e = actual.cpu().double(), expected.double()
    nan_ok = torch.isnan(a) & torch.isnan(e)
    bad = (torch.isfinite(a) != torch.isfinite(e)) & ~nan_ok
    if bool(bad.any()):
        return float("inf")
    fin = torch.isfinite(e)
    err = (a - e).abs()[fin]
    rel = torch.where(err <= SEN169_ATOL, torch.zeros_like(err), err / e.abs()[fin].clamp_min(SEN169_ATOL))
    return float(rel.max()) if rel.numel() else 0.0


def held(t: torch.Tensor) -> torch.Tensor:
    """The values a spyre tensor holds, on the host: a 16-bit one decoded from SEN169 on the device
    (fp16 subnormals were halved on the way in, values beyond 65504 are kept), others as they are."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.to(torch.float32).cpu()
    return t.cpu()


def device_sum(x_dev: torch.Tensor, r_dev: torch.Tensor) -> torch.Tensor:
    """x + residual as the device computes it (float64): in fp32, rounded once to SEN169 for 16-bit
    tensors (NaN for an Inf: one NINF code), in IEEE arithmetic for fp32 ones."""
    exact = held(x_dev).float() + held(r_dev).float()
    if x_dev.dtype in (torch.float16, torch.bfloat16):
        return sen169_reference.round_tensor(exact)
    return exact.double()
