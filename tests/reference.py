"""Independent float64 references and the tolerances the tests hold the kernels to.

The references are written from the definition, in float64, with no code
shared with the kernels. Tolerances are per output dtype: one rounding of a
value computed exactly costs at most half an ulp, i.e. a relative 2**-8
(bfloat16), 2**-11 (float16), 2**-24 (float32); we allow a little more for the
float32 accumulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: (atol, rtol) per output dtype.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}


def rms_norm_ref(
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    weight_offset: float = 0.0,
) -> torch.Tensor:
    """float64 RMSNorm over the trailing ``normalized_shape`` dims (result in float64), scaled
    by ``weight + weight_offset`` (Gemma's ``1 + weight``: 1.0) when there is a weight."""
    dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
    xd = x.double()
    y = xd / torch.sqrt(xd.square().mean(dim=dims, keepdim=True) + eps)
    if weight is not None:
        y = y * (weight.double() + weight_offset)
    return y


def fused_add_rms_norm_ref(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    weight_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(s), s) where s = x + residual rounded to x.dtype, as the op defines it."""
    summed = (x.double() + residual.double()).to(x.dtype)
    return rms_norm_ref(summed, normalized_shape, weight, eps, weight_offset), summed


def assert_close_to_ref(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Compares a kernel's output with a float64 reference at the output dtype's tolerance."""
    atol, rtol = TOLERANCES[actual.dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True
    )
