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

Each row x (length n) is divided by a scale of its own max-abs m before squaring.
With k = ceil(log2(n) / 2) (2^k >= sqrt(n), at most 8), M = max(m * 2^-k, smallest
normal), s = sqrt(eps) (a host constant) and q = s / M,

    u = x / M,   g = b / sqrt(mean(u^2) * b^2 + a^2),   a = min(q, 1), b = 1 / max(q, 1),
    y = u * g  (= x / sqrt(mean(x^2) + eps))

What each step protects:

* u = x / M: max|u| is in [1, 2^k], so u*u stays below 2^16 (no overflow, even if
  the device summed n <= 2^16 squares in 16 bits) and mean(u^2) is at least 1/n. An
  entry u flushes to 0 (|x| below M * 2^-31) has |y| < 2^-31 * 2^k / sqrt(n): below
  SEN169's smallest number, so 0 is its right value; with u = x / m (max|u| = 1), rows
  whose entries span more than 2^31 lost entries whose outputs SEN169 holds. The floor
  of M keeps tiny rows (m < 2^(k-31)) from dividing by a flushed 0.
* m + (m == 0) (eps > 0 only): an all-zero row is divided by 2^-k, not 0; its root
  is then min(eps * 2^2k, 1), floored at the smallest normal where eps is that small
  (rsqrt(0) is NINF, which SEN169 decodes as NaN: no cap after the fact can undo
  that), so y = 0. With eps == 0 a zero row is 0/0 = NaN, as ``F.rms_norm``.
* a and b: one of them is 1 and both are in [0, 1], so the root is at least
  min(1/n, 1) and g <= sqrt(n): g never overflows, and eps dominates exactly where
  it should (q > 1).
* a = 1 / max(t, 1) and b = min(t, 1), with s = mu * 2^e and t = 1/q = M / mu * 2^-e
  (powers of two applied in steps that stay normal numbers, after the 1/mu): no
  reciprocal is taken of a number that may have flushed to 0 or overflowed (both NaN
  in SEN169). M is capped before t where q is already below 2^-31 (so t cannot
  overflow); t flushing to 0 gives b = 0, y = 0, right where x / sqrt(eps) is below
  SEN169's smallest number. eps from 0 to 1e30 (sqrt(1e30) = 1e15 is beyond SEN169's
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
formula, and the plain formula's full-size ops (x / M, u * u, u * g, the weight
multiply; max|x| is not taken from a full-size |x|, which would go out to HBM and
back).
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


#: The largest row exponent k: 2**(2k) = 2**16 bounds u*u far inside SEN169 (8.57e9) even
#: where the device accumulated mean(u^2) over n <= 2**16 elements in 16 bits.
MAX_ROW_EXPONENT = 8


def row_exponent(n: int) -> int:
    """k with 2**k >= sqrt(n) (at most MAX_ROW_EXPONENT). Rows are scaled to max|u| = 2**k: an
    entry that flushes to 0 in u = x / M has |x| < 2**-31 * M, so |y| = |x| / rms < 2**-31 * M / rms,
    and rms >= m / sqrt(n) = M * 2**k / sqrt(n) makes that at most 2**-31 * sqrt(n) / 2**k <= 2**-31,
    the smallest normal."""
    return min(MAX_ROW_EXPONENT, max(0, math.ceil(math.log2(max(n, 1)) / 2)))


def _eps_terms(m: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(a, b) = (min(q, 1), 1 / max(q, 1)) with q = sqrt(eps) / m, row by row, both in [0, 1]
    and in m's dtype; None where eps is below every m the dtype holds (then a = 0, b = 1).

    With sqrt(eps) = mu * 2**e (mu in [0.5, 1)) and t = m / mu * 2**-e (exact powers of two,
    in steps that stay normal), 1/q = t, so a = 1 / max(t, 1) and b = min(t, 1):
    no reciprocal of a number that may have flushed to 0 (1/0 is NINF, i.e. NaN, in SEN169).
    t may flush to 0 (then b = 0, a = 1: eps dominates, y = 0, right to SEN169's precision);
    it must not overflow (NINF), so m is first capped where q is already below 2**-31 and
    a*a far below mean(u^2) >= 1/n."""
    mu, e = math.frexp(math.sqrt(eps))
    tiny, top = device_range(m.dtype)
    # t = cap / mu * 2**-e <= top; cap <= top / 2 also bounds m / mu (the scale the callers pass
    # is m * 2**-k, below top / 2 unless rows have one element).
    cap = min(math.ldexp(1.0, math.floor(math.log2(top)) - 1 + e), math.ldexp(1.0, math.floor(math.log2(top)) - 1))
    if cap < tiny:
        return None
    m = torch.minimum(m, torch.full_like(m, cap))
    # 1/mu (in (1, 2]) first, then the powers of two: where they shrink t, no step flushes a
    # value the last one would have kept.
    t = torch.mul(m, 1.0 / mu)
    for step in power_of_two_steps(-e, m.dtype):
        t = torch.mul(t, step)
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
    # The row scale M = m * 2**-k (k = row_exponent(n)), at least the dtype's smallest normal:
    # u = x / M has max|u| in [1, 2**k], so u*u stays below 2**16 and entries of x that
    # u flushes to 0 have outputs below the smallest normal anyway.
    k = row_exponent(x.shape[-1])
    # (constants are built in fp16/fp32, the dtypes torch-spyre lowers full tensors in: a bf16 one
    # is a converted fp16 one, the same SEN169 value on the device)
    floor = torch.full_like(m, device_range(w_dtype)[0], dtype=c if w_dtype == torch.bfloat16 else w_dtype)
    big_m = torch.maximum(torch.mul(m, 2.0 ** -k), floor.to(w_dtype))
    u = torch.div(xw, big_m).to(c)
    mean_sq = torch.mean(torch.mul(u, u), dim=-1, keepdim=True)
    # bf16 and fp16 are one format (SEN169) on the device, so a bf16 row scale goes to fp16 as it is.
    terms = _eps_terms(big_m.to(c) if big_m.dtype == torch.bfloat16 else big_m, eps) if eps > 0 else None
    tiny = device_range(c)[0]
    if terms is None:
        # eps == 0, or below anything the row scale can hold: y = u / sqrt(mean(u^2)).
        if eps > 0:
            # An all-zero row (u = 0): rsqrt(0) is NINF (NaN) in SEN169, so the root is floored
            # at the smallest normal, which no other row comes near (mean(u^2) >= 1/n).
            mean_sq = torch.maximum(mean_sq, torch.full_like(mean_sq, tiny))
        y = torch.mul(u, torch.rsqrt(mean_sq))
    else:
        a, b = (t.to(c) for t in terms)
        # z = mean(u^2) b^2 + a^2 is at least min(1/n, 1) for a nonzero row and min(eps 2**2k, 1)
        # for an all-zero one (m = 1); where that may flush, rsqrt(0) would be NINF (NaN in
        # SEN169), so z is floored at tiny then.
        z = torch.add(torch.mul(torch.mul(mean_sq, b), b), torch.mul(a, a))
        if eps < 4 * tiny:
            z = torch.maximum(z, torch.full_like(z, tiny))
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
