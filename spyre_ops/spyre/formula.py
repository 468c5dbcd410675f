"""The Spyre RMSNorm formula in torch ops: one function, used both by the eager
kernels (traced and compiled once per signature, :mod:`spyre_ops.spyre.graphs`)
and by the Inductor decompositions (:mod:`spyre_ops.spyre.torch_spyre`).

Only ops torch-spyre lowers on the device in fp16 *and* fp32 are used (``abs amax
eq div mul mean maximum minimum reciprocal add rsqrt``, dtype conversions, full
tensors): no ``clamp`` (its device op ``clip`` has no fp32 form), no ``where``
(``where3``, fp16 only), no ``linalg_vector_norm`` (unreliable as an eager op
upstream).

Each row x (length n) of the 2-D input is normalized without overflow or
underflow for any eps. With m = max|x| and s = sqrt(eps) (a host constant),

    y = x / sqrt(mean(x^2) + eps) = u * g,   u = x / m,
    g = b / sqrt(mean(u^2) * b^2 + a^2),     q = s / m, a = min(q, 1), b = 1 / max(q, 1)

(multiply numerator and denominator by 1/max(m, s)). |u| <= 1 with max|u| = 1,
so mean(u^2) is in [1/n, 1]; a and b are in [0, 1] and one of them is 1, so the
root is at least min(1/n, 1) and never overflows. q = s / m is computed as
mantissa(s) / (m * 2^-exponent(s)), the power of two applied in steps that stay
normal numbers, so it is exact to one rounding whatever eps is: an eps term that
underflows or overflows the compute dtype (eps 1e-13 or 1e30 in fp16) still
counts exactly as much as it should.

Rows the formula cannot take as they are (the shared semantics of a row):

* a NaN in the row: m is NaN, so is every output of the row;
* a +-Inf (no NaN): m = inf, so u = x / inf is 0 at finite entries and NaN at
  the Inf; g is taken from |x| with the Inf replaced by the largest finite
  number, so it is finite and y = u * g is 0 and NaN where it should be;
* an all-zero row: with eps > 0, m becomes 1 (u = 0) and g is capped at the
  largest finite number: y = 0; with eps == 0, u = 0 / 0 is NaN, as
  ``torch.nn.functional.rms_norm``.

No ``where`` is needed for these (torch-spyre's ``where3`` has no fp32 form).

The weight, when there is one, scales y as ``weight + weight_offset`` (keyword
``weight_offset``, 0.0 by default; Gemma's ``1 + weight`` is 1.0), the sum taken
in the compute dtype.

Compute dtypes: ``u`` and everything after it are in the compute dtype (fp16 by
default, or fp32: :func:`spyre_ops.spyre.set_compute_dtype`; fp64 inputs in
fp64). The row scale m and q are taken in the input's dtype for bf16 and fp32
inputs under the fp16 policy (they may hold values fp16 cannot), so |x| beyond
65504 is scaled before any conversion to fp16.
"""

from __future__ import annotations

import math

import torch


def compute_dtype_for(x_dtype: torch.dtype, policy: torch.dtype) -> torch.dtype:
    """The dtype the formula computes in for input x_dtype under the policy (float16/float32)."""
    return torch.float64 if x_dtype == torch.float64 else policy


def scale_dtype_for(x_dtype: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """The dtype the row scale is taken in: x's own for bf16 and fp32 inputs under fp16
    compute (they may hold values fp16 cannot; converting bf16 rows to float32 would
    mix converted and unconverted full rows in one op, which torch-spyre rejects),
    else the compute dtype."""
    if compute == torch.float16 and x_dtype in (torch.bfloat16, torch.float32):
        return x_dtype
    return compute


def _cap(m: torch.Tensor) -> torch.Tensor:
    """minimum(m, largest finite number of m's dtype), per row; the constant is built in
    fp16/fp32 (the dtypes torch-spyre lowers constants in), a bf16 m converted around it."""
    big = torch.finfo(m.dtype).max
    if m.dtype in (torch.float16, torch.float32, torch.float64):
        return torch.minimum(m, torch.full_like(m, big))
    m32 = m.to(torch.float32)
    return torch.minimum(m32, torch.full_like(m32, big)).to(m.dtype)


def power_of_two_steps(exponent: int, dtype: torch.dtype) -> list[float]:
    """Factors whose product is 2**exponent, each a normal number of dtype (none for 0)."""
    info = torch.finfo(dtype)
    top = int(math.log2(info.max)) - 1  # 2**top and 2**-top are normal
    top = min(top, -int(math.log2(info.tiny)))
    steps = []
    while exponent != 0:
        step = max(-top, min(top, exponent))
        steps.append(math.ldexp(1.0, step))
        exponent -= step
    return steps


def _sqrt_eps_over(m: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(eps) / m, row by row, with one rounding (see the module docstring); eps > 0."""
    mantissa, exponent = math.frexp(math.sqrt(eps))  # sqrt(eps) = mantissa * 2**exponent
    d = m
    for step in power_of_two_steps(-exponent, m.dtype):
        d = torch.mul(d, step)
    return torch.mul(torch.reciprocal(d), mantissa)


def _scale(weight: torch.Tensor, c: torch.dtype, weight_offset: float) -> torch.Tensor:
    """The weight as the formula multiplies by it: ``weight + weight_offset`` in the compute dtype."""
    w = weight.to(c)
    return torch.add(w, weight_offset) if weight_offset != 0.0 else w


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype, *,
                  weight_offset: float = 0.0) -> torch.Tensor:
    """RMSNorm of each row (last dim) of x, any rank, scaled by ``weight + weight_offset``
    (Gemma's ``1 + weight``: offset 1.0; no weight: no scale); result of x's shape and dtype."""
    in_dtype = x.dtype
    c = compute_dtype_for(in_dtype, policy)
    w_dtype = scale_dtype_for(in_dtype, c)
    xw = x.to(w_dtype)
    abs_x = torch.abs(xw)
    m = torch.amax(abs_x, dim=-1, keepdim=True)
    if eps > 0:
        m = torch.add(m, torch.eq(m, 0.0).to(w_dtype))  # an all-zero row is divided by 1
    # The mean of squares from |x| capped at the row's finite scale (identity on
    # finite rows; +-Inf becomes the largest finite number): finite for Inf rows,
    # so g is too. Only per-row (broadcast) constants: torch-spyre cannot mix a
    # full-size constant with a converted tensor in one pointwise op.
    m_finite = _cap(m)
    ratio = torch.div(torch.minimum(abs_x, m_finite), m_finite).to(c)
    mean_sq = torch.mean(torch.mul(ratio, ratio), dim=-1, keepdim=True)
    if eps > 0:
        one = torch.ones_like(mean_sq)
        q = _sqrt_eps_over(m_finite, eps).to(c)
        a = torch.minimum(q, one)
        b = torch.reciprocal(torch.maximum(q, one))
        g = torch.mul(b, torch.rsqrt(torch.add(torch.mul(torch.mul(mean_sq, b), b), torch.mul(a, a))))
    else:
        g = torch.rsqrt(mean_sq)
    # Finite for an all-zero row (whose u is 0); NaN stays NaN.
    g = _cap(g)
    u = torch.div(xw, m).to(c)  # an Inf row: 0 at finite entries, NaN at the Inf
    y = torch.mul(u, g)
    if weight is not None:
        y = torch.mul(y, _scale(weight, c, weight_offset))
    return y.to(in_dtype)


def fused_add_rms_norm_rows(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype, *,
    weight_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual) over the last dim, the sum rounded to x's dtype first."""
    summed = torch.add(x, residual)
    return rms_norm_rows(summed, weight, eps, policy, weight_offset=weight_offset), summed


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype, *,
             weight_offset: float = 0.0) -> torch.Tensor:
    """RMSNorm over the last dim of x of any rank >= 1, x's rank kept (no reshape in the graph:
    torch-spyre cannot lay out a 2-D view of a higher-rank graph input); contiguous result."""
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return rms_norm_rows(x, weight, eps, policy, weight_offset=weight_offset).contiguous()


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype, *,
    weight_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual) over the last dim of x of any rank >= 1, rank kept."""
    if x.numel() == 0:
        empty = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return empty, empty.clone()
    out, summed = fused_add_rms_norm_rows(x, residual, weight, eps, policy, weight_offset=weight_offset)
    return out.contiguous(), summed.contiguous()
