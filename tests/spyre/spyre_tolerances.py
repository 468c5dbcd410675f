"""Tolerances for the Spyre kernels, by (input dtype, compute dtype).

With fp16 compute (the default) the result has fp16 accuracy whatever the
input dtype, so float16 and float32 inputs are held to vLLM's tolerance for
this op in fp16 (atol 1e-2, rtol 2e-3); bfloat16 outputs to the bf16 tolerance
of tests/reference.py, since rounding the exact result to bf16 alone may cost a
relative 2**-9. With float32 compute each output dtype gets the tolerance of
tests/reference.py, as the CPU kernels do.
"""

from __future__ import annotations

import torch
from reference import TOLERANCES

#: vLLM's tolerance for RMSNorm in fp16 (op.get_tolerance(torch.float16)).
FP16_COMPUTE = (1e-2, 2e-3)


def tolerance(x_dtype: torch.dtype, compute: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for the output of a Spyre kernel on x_dtype input."""
    if x_dtype == torch.float64 or compute == torch.float32:
        return TOLERANCES[x_dtype]
    if x_dtype == torch.bfloat16:
        return TOLERANCES[torch.bfloat16]
    return FP16_COMPUTE


def assert_close(actual: torch.Tensor, expected: torch.Tensor, x_dtype: torch.dtype, compute: torch.dtype) -> None:
    """Compares a Spyre kernel's output (any device) with a float64 reference."""
    atol, rtol = tolerance(x_dtype, compute)
    torch.testing.assert_close(actual.cpu().double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True)
