"""``spyre_ops.nn.RMSNorm``: a drop-in for ``torch.nn.RMSNorm`` backed by the spyre ops, and
``spyre_ops.nn.GemmaRMSNorm``: a drop-in for Hugging Face's ``Gemma3RMSNorm`` (``(1 + weight)``).

(No ``from __future__ import annotations`` here: TorchScript reads this
module's class annotations and needs them as types, not strings.)
"""

from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from . import _C
from .ops import ShapeLike, _as_shape


class _ConstantFloat(float):
    """A float that torch.compile treats as a graph constant.

    Under ``dynamic=True`` Dynamo traces plain-``float`` module attributes as
    symbolic floats; ``eps`` then gets specialized inside the op call, which
    restarts the analysis and counts as an extra compilation. ``eps`` is part
    of the op's schema, not data, so it is stored as this subclass: Dynamo bakes
    it into the graph (guarding on its value) on the first pass. TorchScript
    sees it as the plain ``float`` the class annotation of ``RMSNorm._eps`` names.
    """


def _default_eps(dtype: torch.dtype) -> float:
    """The eps ``torch.nn.RMSNorm(eps=None)`` uses for input ``dtype``: the machine
    epsilon of the dtype the normalization is computed in (float32 for the
    16-bit dtypes), as torch's ``rms_norm`` picks it. Written out so that
    TorchScript can compile it."""
    if dtype == torch.float64:
        return 2.220446049250313e-16
    return 1.1920928955078125e-07


#: The eager entry points (rms_norm, fused_add_rms_norm) by whether the module is Gemma's.
_EAGER_CALLS = {False: (_C.rms_norm, _C.fused_add_rms_norm), True: (_C.gemma_rms_norm, _C.gemma_fused_add_rms_norm)}


def _default_eps_of(x: torch.Tensor) -> float:
    """:func:`_default_eps` of ``x``'s dtype: one call in a ``torch.fx`` graph, where
    the dtype is known only when the graph runs."""
    return _default_eps(x.dtype)


def _rms_norm_or_fused(
    gemma: bool,
    x: torch.Tensor,
    residual: Optional[torch.Tensor],
    normalized_shape: List[int],
    weight: Optional[torch.Tensor],
    eps: Optional[float],
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``RMSNorm.forward``'s choice, made when a ``torch.fx`` graph runs: the graph of
    ``symbolic_trace(RMSNorm(n))`` has ``residual`` as an input that defaults to None."""
    if eps is None:
        eps = _default_eps(x.dtype)
    if gemma:
        if residual is None:
            return torch.ops.spyre_ops.gemma_rms_norm(x, normalized_shape, weight, eps)
        return torch.ops.spyre_ops.gemma_fused_add_rms_norm(x, residual, normalized_shape, weight, eps)
    if residual is None:
        return torch.ops.spyre.rms_norm(x, normalized_shape, weight, eps)
    return torch.ops.spyre.fused_add_rms_norm(x, residual, normalized_shape, weight, eps)


# Calls to these from this module are single nodes of torch.fx graphs (not traced through).
torch.fx.wrap("_default_eps_of")
torch.fx.wrap("_rms_norm_or_fused")


def _is_default_input(value: object) -> bool:
    """Whether ``value`` is a ``torch.fx`` graph input that defaults to None (a
    forward argument the caller of ``symbolic_trace`` left at its default)."""
    return (isinstance(value, torch.fx.Proxy) and value.node.op == "placeholder"
            and value.node.args == (None,))


class RMSNorm(nn.Module):
    """RMSNorm over the trailing ``hidden_size`` dims, computed by ``torch.ops.spyre.rms_norm``.

    Takes the arguments of ``torch.nn.RMSNorm`` (``hidden_size`` is its
    ``normalized_shape``: an int, NumPy integer or sequence of ints; ``eps=None``,
    the default as in torch, means the machine epsilon of the compute dtype: float32's
    for 16-bit and float32 inputs, float64's for float64, chosen at call time). Its
    state dict matches ``torch.nn.RMSNorm``'s (one ``weight`` entry when
    ``elementwise_affine``, none otherwise), so checkpoints load either way.
    It can be compiled with ``torch.compile`` and scripted with ``torch.jit.script``.

    ``forward(x)`` returns the normalized tensor; ``forward(x, residual)``
    returns ``(out, x + residual)`` through the fused op, as vLLM's RMSNorm does.
    ``torch.fx.symbolic_trace`` of the module itself gives a graph that takes
    ``residual`` as an optional input and picks the form when it runs.
    """

    __jit_unused_properties__ = ["eps"]  # TorchScript reads _eps directly
    _eps: Optional[float]
    _shape: List[int]
    __constants__ = ["_gemma"]
    #: Whether the module computes Gemma's (1 + weight) scale (spyre_ops::gemma_* ops).
    _gemma: bool = False

    def __init__(
        self,
        hidden_size: ShapeLike,
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = tuple(int(s) for s in _as_shape(hidden_size))
        self._shape = list(self.normalized_shape)
        self.eps = eps  # stored as a _ConstantFloat by the property below
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    @property
    def eps(self) -> float | None:
        """The epsilon added to the mean of squares (``None``: the compute dtype's machine epsilon)."""
        return self._eps

    @eps.setter
    def eps(self, value: float | None) -> None:
        if isinstance(value, torch.Tensor):
            raise TypeError(
                "spyre_ops.nn.RMSNorm: eps must be a float or None, got a Tensor; pass float(eps)"
            )
        self._eps = None if value is None else _ConstantFloat(value)

    def reset_parameters(self) -> None:
        """Sets the weight back to ones."""
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(
        self, x: torch.Tensor, residual: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``rms_norm(x)``, or ``(rms_norm(x + residual), x + residual)`` with a residual."""
        eps = self._eps
        if not torch.jit.is_scripting():
            if not torch.compiler.is_dynamo_compiling():
                if isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace
                    if _is_default_input(residual):
                        return _rms_norm_or_fused(self._gemma, x, residual, self._shape, self.weight, eps)
                    if eps is None:
                        eps = _default_eps_of(x)
                else:
                    # Eager: the direct op call of spyre_ops.ops (NotImplemented: take torch.ops).
                    if eps is None:
                        eps = _default_eps(x.dtype)
                    eager_rms_norm, eager_fused = _EAGER_CALLS[self._gemma]
                    if residual is None:
                        y = eager_rms_norm(x, self._shape, self.weight, eps, None)
                    else:
                        y = eager_fused(x, residual, self._shape, self.weight, eps)
                    if y is not NotImplemented:
                        return y
        if eps is None:
            eps = _default_eps(x.dtype)
        if self._gemma:
            if residual is None:
                return torch.ops.spyre_ops.gemma_rms_norm(x, self._shape, self.weight, eps)
            return torch.ops.spyre_ops.gemma_fused_add_rms_norm(x, residual, self._shape, self.weight, eps)
        if residual is None:
            return torch.ops.spyre.rms_norm(x, self._shape, self.weight, eps)
        return torch.ops.spyre.fused_add_rms_norm(x, residual, self._shape, self.weight, eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}"
        )


class GemmaRMSNorm(RMSNorm):
    """Gemma's RMSNorm, ``x / sqrt(mean(x**2) + eps) * (1 + weight)``, computed by
    ``torch.ops.spyre_ops.gemma_rms_norm``: a drop-in for Hugging Face's ``Gemma3RMSNorm``.

    As there, ``weight`` starts at zeros (the identity scale), ``eps`` defaults to
    1e-6, the mean of squares and ``1 + weight`` are taken in float32 and the result
    is rounded once to ``x.dtype``; the state dict is the same (one ``weight``), so
    Gemma checkpoints load as they are. ``dim`` is the hidden size (or a
    ``normalized_shape``); the other arguments are :class:`RMSNorm`'s.
    ``forward(x, residual)`` returns ``(out, x + residual)`` through
    ``spyre_ops::gemma_fused_add_rms_norm``, the sum rounded to ``x.dtype`` first.
    """

    _gemma: bool = True

    def __init__(
        self,
        dim: ShapeLike,
        eps: float | None = 1e-6,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, eps, elementwise_affine, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sets the weight back to zeros (a scale of 1 + 0)."""
        if self.weight is not None:
            nn.init.zeros_(self.weight)
