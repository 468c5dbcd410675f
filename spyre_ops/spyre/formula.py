"""The Spyre RMSNorm formula in torch ops: one function, used both by the eager
kernels (traced and compiled once per signature, :mod:`spyre_ops.spyre.graphs`)
and by the Inductor decompositions (:mod:`spyre_ops.spyre.torch_spyre`).

Only ops torch-spyre lowers on the device in fp16 *and* fp32 are used (``amax amin
neg eq div mul mean maximum minimum reciprocal add rsqrt``, dtype conversions, full
tensors): no ``clamp`` (its device op ``clip`` has no fp32 form), no ``where``
(``where3``, fp16 only), no ``linalg_vector_norm`` (unreliable as an eager op
upstream).

The number format it is built for. Spyre holds float16 and bfloat16 as SEN169
(DLFloat16: 1 sign, 6 exponent, 9 mantissa bits, bias 31; largest finite
~8.57e9, smallest normal 2^-31 ~4.7e-10, no subnormals, one NINF code for NaN
and Inf). Its limits for this formula: x*x overflows at |x| > 9.27e4 (Gemma 3
270M's residual stream reaches 1.04e5), squares below 4.7e-10 (|x| < 2.2e-5)
flush to 0, and a mean of squares spans far more binades (2^-62..2^66) than
SEN169 holds (2^-31..2^33), so no fixed prescale is right for every row.

Each row x (length n) is divided by its own max-abs m before squaring. With
s = sqrt(eps) (a host constant) and q = s / m,

    u = x / m,   z = mean(u^2) * b^2 + a^2,   a = min(q, 1), b = 1 / max(q, 1),
    r = max(m, s) * sqrt(z) = sqrt(mean(x^2) + eps),   y = x / r

(r is the row's root mean square, eps included; when eps is 0, negligible or
beyond the dtype, or x is not in the compute dtype, y = u * b / sqrt(z) instead).
What each step protects:

* u = x / m: |u| <= 1 with max|u| = 1, so u*u cannot overflow, and
  mean(u^2) is in [1/n, 1] whatever the row's magnitude (SEN169 values from
  2^-31 to 8.57e9) and however wide the device accumulates the sum (at most n).
* y = x / r, not u * g: u flushes entries more than 2^31 below their row's max
  to 0 (SEN169 has no subnormals); x / r keeps them. r is at least s >= 2^-30
  and at most the row's RMS, so it needs eps in [(2 * 2^-31)^2, 8.57e9^2 / 16]
  (about 8.7e-19 to 4.6e18, with fp16 compute) and a row RMS below ~8.3e9. Outside
  that eps range the u * g form is used, and entries more than 2^31 below their
  row's max come out 0: the one row class SEN169 holds that the formula does
  not, tested as such in tests/spyre/test_sen169_accuracy.py.
* m + (m == 0) (eps > 0 only): an all-zero row is divided by 1, not 0; its z is
  then min(eps, 1), floored at the smallest normal where eps is that small (rsqrt(0)
  is NINF, which SEN169 decodes as NaN: no cap after the fact can undo that), so
  y = 0. With eps == 0 a zero row is 0/0 = NaN, as ``torch.nn.functional.rms_norm``.
* a and b: one of them is 1 and both are in [0, 1], so z is in [min(1/n, 1), 2]
  for every nonzero row, and eps dominates exactly where it should (q > 1).
* a = 1 / max(t', 1) and b = min(t', 1), with s = mu * 2^e and t' = m * 2^-e / mu
  (powers of two applied in steps that stay normal numbers): no reciprocal is taken of
  a number that may have flushed to 0 or overflowed (both NaN in SEN169). m is
  capped before t' where q is already below 2^-31 (so t' cannot overflow); t'
  flushing to 0 gives b = 0, y = 0, right where x / sqrt(eps) is below SEN169's
  smallest number. eps from 0 to 1e30 (sqrt(1e30) = 1e15 is beyond SEN169's
  range) counts exactly, to a few roundings.

Rows SEN169 cannot hold as numbers: a NaN or Inf in a row (one NINF code on the
device) makes m NaN/Inf and the whole row's output NaN. On the host side
``F.rms_norm`` keeps the finite entries of an Inf row at 0; the device cannot tell
Inf from NaN, so the formula does not try.

The weight, when there is one, is taken in x's dtype first (as the eager kernels
hand it to the graph, :mod:`spyre_ops.spyre.weights`: a weight of another dtype
cannot share a device op with x on torch-spyre), then scales y as
``weight + weight_offset`` (keyword ``weight_offset``, 0.0 by default; Gemma's
``1 + weight`` is 1.0), the sum taken in the compute dtype.

Compute dtypes: ``u`` and everything after it are in the compute dtype (fp16 by
default, or fp32: :func:`spyre_ops.spyre.set_compute_dtype`; fp64 inputs in
fp64). The row scale m is taken in the input's dtype for bf16 and fp32 inputs
under the fp16 policy (an fp32 input may hold values SEN169 cannot), so x is
scaled before any conversion to fp16.

Device cost (torch-spyre's analytical cost model, docs/spyre-path.md): three
reductions (max and min of x, the mean of squares) against one for the plain
formula, and four full-size ops (x / m, u * u, x / r, the weight multiply)
against the plain formula's three (max|x| is not taken from a full-size |x|,
which would go out to HBM and back).
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


#: SEN169's largest finite value and smallest normal (no subnormals): where Spyre holds
#: float16 and bfloat16, and so the range the formula keeps 16-bit intermediates in.
SEN169_MAX = math.ldexp(1.0 + 510 / 512, 32)
SEN169_TINY = math.ldexp(1.0 + 1 / 512, -31)  # codes with e = 0 and m = 0 are zeros


def device_range(dtype: torch.dtype) -> tuple[float, float]:
    """(smallest normal, largest finite) of dtype as the device holds it: SEN169 for 16-bit floats."""
    if dtype in (torch.float16, torch.bfloat16):
        return SEN169_TINY, SEN169_MAX
    info = torch.finfo(dtype)
    return info.tiny, info.max


def _eps_terms(m: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(a, b) = (min(q, 1), 1 / max(q, 1)) with q = sqrt(eps) / m, row by row, both in [0, 1]
    and in m's dtype; None where eps is below every m the dtype holds (then a = 0, b = 1).

    With sqrt(eps) = mu * 2**e (mu in [0.5, 1)) and t = m * 2**-e (exact powers of two, in
    steps that stay normal), 1/q = t / mu, so a = 1 / max(t / mu, 1) and b = min(t / mu, 1):
    no reciprocal of a number that may have flushed to 0 (1/0 is NINF, i.e. NaN, in SEN169).
    t may flush to 0 (then b = 0, a = 1: eps dominates, y = 0, right to SEN169's precision);
    it must not overflow (NINF), so m is first capped where q is already below 2**-31 and
    a*a far below mean(u^2) >= 1/n."""
    mu, e = math.frexp(math.sqrt(eps))
    tiny, top = device_range(m.dtype)
    cap = math.ldexp(1.0, math.floor(math.log2(top)) - 1 + e)  # t = cap * 2**-e <= top / 2
    if cap < tiny:
        return None
    if cap < top:
        m = torch.minimum(m, torch.full_like(m, cap))
    t = m
    for step in power_of_two_steps(-e, m.dtype):
        t = torch.mul(t, step)
    t = torch.mul(t, 1.0 / mu)  # 1/q, at most top (cap * 2**-e <= top / 2, 1/mu <= 2)
    one = torch.ones_like(t)
    return torch.reciprocal(torch.maximum(t, one)), torch.minimum(t, one)


def _scale(weight: torch.Tensor, x_dtype: torch.dtype, c: torch.dtype, weight_offset: float) -> torch.Tensor:
    """The weight as the formula multiplies by it: ``weight + weight_offset`` in the compute dtype,
    the weight first rounded to x's dtype (what the eager kernels pass in)."""
    w = weight.to(x_dtype).to(c)
    return torch.add(w, weight_offset) if weight_offset != 0.0 else w


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor | None, eps: float, policy: torch.dtype, *,
                  weight_offset: float = 0.0) -> torch.Tensor:
    """RMSNorm of each row (last dim) of x, any rank, scaled by ``weight + weight_offset``
    (Gemma's ``1 + weight``: offset 1.0; no weight: no scale); result of x's shape and dtype."""
    in_dtype = x.dtype
    c = compute_dtype_for(in_dtype, policy)
    w_dtype = scale_dtype_for(in_dtype, c)
    xw = x.to(w_dtype)
    # max|x| as max(amax(x), -amin(x)): two reductions of x itself, which torch-spyre
    # reads where x already is, instead of a full-size |x| it would write out and read back.
    # A 16-bit x scaled in float32 (the fp32 policy): m is taken from x itself and converted once
    # (the max of 16-bit values is one of them, exact in either dtype), so that m and x.to(float32)
    # are both converted tensors: torch-spyre rejects a pointwise op between a converted full-size
    # tensor and an unconverted per-row one computed by a binary op (at row counts that are
    # multiples of 32, "Multi-arg pointwise with mixed EA").
    xm = x if (in_dtype in (torch.float16, torch.bfloat16) and w_dtype == torch.float32) else xw
    m = torch.maximum(torch.amax(xm, dim=-1, keepdim=True), torch.neg(torch.amin(xm, dim=-1, keepdim=True)))
    if eps > 0:
        m = torch.add(m, torch.eq(m, 0.0).to(xm.dtype))  # an all-zero row is divided by 1
    m = m.to(w_dtype)
    u = torch.div(xw, m).to(c)
    mean_sq = torch.mean(torch.mul(u, u), dim=-1, keepdim=True)
    # bf16 and fp16 are one format (SEN169) on the device, so a bf16 row scale goes to fp16 as it is.
    terms = _eps_terms(m.to(c) if m.dtype == torch.bfloat16 else m, eps) if eps > 0 else None
    if terms is None:
        # eps == 0, or below anything the row scale can hold: y = u / sqrt(mean(u^2)), where u
        # flushes entries more than 2**31 below their row's max to 0 (x / m).
        if eps > 0:
            # An all-zero row (u = 0): rsqrt(0) is NINF (NaN) in SEN169, so the root is floored
            # at the smallest normal, which no other row comes near (mean(u^2) >= 1/n).
            mean_sq = torch.maximum(mean_sq, torch.full_like(mean_sq, device_range(c)[0]))
        y = torch.mul(u, torch.rsqrt(mean_sq))
    else:
        a, b = (t.to(c) for t in terms)
        tiny, top = device_range(c)
        # z = mean(u^2) b^2 + a^2 is at least min(1/n, 1) for a nonzero row and min(eps, 1) for an
        # all-zero one (m = 1); where eps^2 may flush, rsqrt(0) would be NINF (NaN in SEN169), so z
        # is floored at tiny then.
        z = torch.add(torch.mul(torch.mul(mean_sq, b), b), torch.mul(a, a))
        if eps < 4 * tiny:
            z = torch.maximum(z, torch.full_like(z, tiny))
        s = math.sqrt(eps)
        if w_dtype == c and 2 * tiny <= s <= top / 4:
            # y = x / r, r = max(m, s) * sqrt(z) the row's root mean square, eps included
            # (about s for an all-zero row: y = 0). Entries far below the row's max keep
            # their value, where u = x / m flushes those below m * 2**-31 to 0.
            r = torch.div(torch.maximum(m.to(c), torch.full_like(mean_sq, s)), torch.rsqrt(z))
            y = torch.div(xw, r)
        else:
            # sqrt(eps) beyond the dtype (or x in another dtype than the compute): y = u * g with
            # g = b / sqrt(z) in [0, sqrt(n)] (b flushes to 0 where eps dominates beyond range).
            y = torch.mul(u, torch.mul(b, torch.rsqrt(z)))
    if weight is not None:
        y = torch.mul(y, _scale(weight, in_dtype, c, weight_offset))
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
