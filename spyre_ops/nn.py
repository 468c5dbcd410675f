"""``spyre_ops.nn.RMSNorm``: a drop-in for ``torch.nn.RMSNorm`` backed by the spyre ops."""

from __future__ import annotations

import torch
from torch import nn

from .ops import ShapeLike, _as_shape, fused_add_rms_norm, rms_norm


class _ConstantFloat(float):
    """A float that torch.compile treats as a graph constant.

    Under ``dynamic=True`` Dynamo traces plain-``float`` module attributes as
    symbolic floats; ``eps`` then gets specialized inside the op call, which
    restarts the analysis and counts as an extra compilation. ``eps`` is part
    of the op's schema, not data, so it is stored as this subclass: Dynamo bakes
    it into the graph (guarding on its value) on the first pass.
    """


class RMSNorm(nn.Module):
    """RMSNorm over the trailing ``hidden_size`` dims, computed by ``torch.ops.spyre.rms_norm``.

    Its state dict matches ``torch.nn.RMSNorm``'s (one ``weight`` entry when
    ``elementwise_affine``, none otherwise), so checkpoints load either way.

    ``forward(x)`` returns the normalized tensor; ``forward(x, residual)``
    returns ``(out, x + residual)`` through the fused op, as vLLM's RMSNorm does.
    """

    def __init__(
        self,
        hidden_size: ShapeLike,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = tuple(_as_shape(hidden_size))
        self.eps = eps  # stored as a _ConstantFloat by the property below
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    @property
    def eps(self) -> float:
        """The epsilon added to the mean of squares."""
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps = _ConstantFloat(value)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            return rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return fused_add_rms_norm(x, residual, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}"
        )
