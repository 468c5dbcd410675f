"""Hugging Face transformers integration: route a model's RMSNorm modules to the spyre ops.

``patch(model)`` changes the class of every RMSNorm module of ``model`` to a
subclass whose ``forward`` is one call of a library op, ``torch.ops.spyre.rms_norm``
or, for Gemma's norms, ``torch.ops.spyre_ops.gemma_rms_norm`` (through
:func:`spyre_ops.rms_norm` / :func:`spyre_ops.gemma_rms_norm`, whose eager calls skip
torch.ops' argument parsing); the
modules keep their parameters, buffers, hooks and state-dict keys.
:func:`unpatch` (or the returned report's :meth:`PatchReport.undo`, or leaving
it as a ``with`` block) restores the original classes::

    import spyre_ops.transformers as spyre_tf

    report = spyre_tf.patch(model)     # e.g. 61 modules of a Llama
    print(report)                      # what was patched, by class and family
    model.generate(...)                # every RMSNorm is one library op
    report.undo()                      # back to transformers' own forward

Two families of norms are covered, each a list of transformers classes
(:data:`NORM_CLASSES`):

* ``"llama"``: ``weight * x / sqrt(mean(x^2) + eps)`` (Llama, Mistral, Mixtral,
  Qwen2/2.5/3 and their per-head q/k norms, Granite, Phi-3, SmolLM3, OLMo-2,
  ``torch.nn.RMSNorm``, ...). transformers rounds the normalized row to the input
  dtype before multiplying by the weight; the library op multiplies in float32
  and rounds once (identical in float32, at most one rounding apart in 16 bits).
  With a weight of another dtype (float32 weights, bfloat16 activations) the
  result has the dtype the class returns: Llama's ``weight * x̂.to(input_dtype)``
  the promoted one (the op then computes in it), OLMo-2's and torch's the input's.
* ``"gemma"``: ``(1 + weight) * x / sqrt(mean(x^2) + eps)`` computed in float32
  and rounded once (Gemma, Gemma 2, Gemma 3), as ``spyre_ops.gemma_rms_norm``
  computes it: the module's own weight goes to the op, which adds the 1 inside its
  kernel (no ``1 + weight`` tensor per call).

Any other module whose class name says RMSNorm is refused (``ValueError`` naming
the classes) rather than guessed at; :func:`register_norm_class` declares a
class's family. Before patching, each class's forward is checked against the
family's formula on a random float32 input, so a class whose arithmetic differs
from what its family assumes is refused too.

The patched forward reads the module's eps on every call, as transformers does
(``torch.nn.RMSNorm``'s ``eps=None``: the compute dtype's machine epsilon, as in
torch). It works on any device the ops have kernels for (CPU; spyre, the emulated
device included) and under ``torch.compile(fullgraph=True)``, where each norm is
one library-op node (``eps`` a graph constant). A patched model pickles and
``torch.save``s whole: each patched module reduces to its original class and
family, and the patched class is made again where it is loaded.

This module never imports transformers: it recognizes classes by name, so
it imports (and :func:`patch` works on any ``torch.nn.Module`` tree) without
transformers installed; ``import spyre_ops`` does not import this module.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import ops
from .nn import _ConstantFloat, _default_eps

__all__ = [
    "FAMILIES",
    "NORM_CLASSES",
    "PatchReport",
    "find_norms",
    "is_patched",
    "patch",
    "patched_modules",
    "register_norm_class",
    "unpatch",
]

#: The norm families and what their forward computes.
FAMILIES = {
    "llama": "weight * x / sqrt(mean(x^2) + eps)",
    "gemma": "(1 + weight) * x / sqrt(mean(x^2) + eps), in float32",
}

#: transformers class name -> family. Extend with :func:`register_norm_class`.
NORM_CLASSES: dict[str, str] = {
    name: "llama"
    for name in (
        "RMSNorm",  # torch.nn.RMSNorm
        "LlamaRMSNorm",
        "MistralRMSNorm",
        "MixtralRMSNorm",
        "Qwen2RMSNorm",
        "Qwen2MoeRMSNorm",
        "Qwen3RMSNorm",
        "Qwen3MoeRMSNorm",
        "GraniteRMSNorm",
        "GraniteMoeRMSNorm",
        "Phi3RMSNorm",
        "SmolLM3RMSNorm",
        "Olmo2RMSNorm",
    )
}
NORM_CLASSES.update({name: "gemma" for name in ("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm")})

#: A class name that says "RMS norm" (module classes matching it must be known).
_LOOKS_LIKE_RMS_NORM = re.compile(r"rms_?norm", re.IGNORECASE)

#: Attribute on a patched module naming its eps attribute (read on every call, as
#: transformers does).
_EPS_ATTR = "_spyre_ops_eps_attr"
#: Attribute on a patched module: whether its class returns ``promote_types(x, weight)``
#: (Llama's ``weight * x̂.to(input_dtype)``) rather than ``x.dtype``.
_PROMOTES_ATTR = "_spyre_ops_promotes"
#: The attributes :func:`patch` sets on a module (removed by :func:`unpatch`).
_PATCH_ATTRS = (_EPS_ATTR, _PROMOTES_ATTR, "_spyre_ops_shape")


def register_norm_class(cls: type | str, family: str) -> None:
    """Declares that RMSNorm class ``cls`` (a class or class name) computes ``family``'s formula.

    Args:
        cls: the module class (or its ``__name__``).
        family: a key of :data:`FAMILIES` (``"llama"`` or ``"gemma"``).

    Raises:
        ValueError: for an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"spyre_ops.transformers: family must be one of {sorted(FAMILIES)}, got {family!r}")
    NORM_CLASSES[cls if isinstance(cls, str) else cls.__name__] = family


# ---------------------------------------------------------------------------
# The patched forwards
# ---------------------------------------------------------------------------


def _normalized_shape(module: nn.Module) -> list[int]:
    weight = getattr(module, "weight", None)
    if weight is not None:
        return list(weight.shape)
    return list(module.normalized_shape)


def _eps(module: nn.Module, x: Tensor) -> float:
    """The module's eps now (transformers reads it on every call); None (torch.nn.RMSNorm's
    default) is the machine epsilon of ``x``'s compute dtype, as torch's ``rms_norm`` takes it."""
    eps = getattr(module, getattr(module, _EPS_ATTR))
    return _default_eps(x.dtype) if eps is None else eps


def _llama_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    weight = self.weight
    eps = _eps(self, hidden_states)
    if weight is not None and getattr(self, _PROMOTES_ATTR):
        # transformers' weight * x̂.to(input_dtype) is of the promoted dtype (float32 for
        # float32 weights and bfloat16 activations): the op computes in that dtype.
        dtype = torch.promote_types(hidden_states.dtype, weight.dtype)
        if dtype != hidden_states.dtype:
            hidden_states = hidden_states.to(dtype)
    return ops.rms_norm(hidden_states, self._spyre_ops_shape, weight, eps)


def _gemma_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    return ops.gemma_rms_norm(hidden_states, self._spyre_ops_shape, self.weight, _eps(self, hidden_states))


_FORWARDS = {"llama": _llama_forward, "gemma": _gemma_forward}
_patched_classes: dict[tuple[type, str], type] = {}


def _rebuild_patched(cls: type, family: str) -> nn.Module:
    """An empty instance of ``cls``'s patched class (unpickling; the state comes next)."""
    patched = _patched_class(cls, family)
    return patched.__new__(patched)


def _reduce_patched(self: nn.Module, protocol: int) -> tuple:
    # The patched classes are made at run time: pickle names the original class (importable)
    # and the family, and the class is made again where the module is loaded.
    cls = type(self)
    return _rebuild_patched, (cls._spyre_ops_original_class, cls._spyre_ops_family), self.__getstate__()


def _patched_class(cls: type, family: str) -> type:
    key = (cls, family)
    if key not in _patched_classes:
        _patched_classes[key] = type(
            cls.__name__,
            (cls,),
            {
                "forward": _FORWARDS[family],
                "__reduce_ex__": _reduce_patched,
                "_spyre_ops_original_class": cls,
                "_spyre_ops_family": family,
                "__module__": __name__,
                "__doc__": f"{cls.__name__} whose forward is one spyre_ops library op ({family} family).",
            },
        )
    return _patched_classes[key]


def is_patched(module: nn.Module) -> bool:
    """Whether ``module`` is a norm module patched by :func:`patch`."""
    return "_spyre_ops_original_class" in type(module).__dict__


def _eps_attr(module: nn.Module) -> str:
    """The name of the module's eps attribute (``variance_epsilon`` or ``eps``)."""
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name
    if isinstance(module, nn.RMSNorm) and module.eps is None:
        return "eps"  # the compute dtype's machine epsilon, chosen per call
    raise ValueError(
        f"spyre_ops.transformers: {type(module).__name__} has no float 'variance_epsilon' or 'eps' attribute"
    )


def _promotes(module: nn.Module) -> bool:
    """Whether the class's own forward returns the dtype of ``weight * x`` (Llama's
    ``weight * x̂.to(input_dtype)``) rather than ``x.dtype`` (Gemma, OLMo-2,
    torch.nn.RMSNorm): run on a bfloat16 input with a float32 weight."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return False
    probe = copy.deepcopy(module)
    probe = probe.to_empty(device="cpu") if weight.device.type == "meta" else probe.to(device="cpu")
    probe = probe.float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.RMSNorm: "Mismatch dtype between input and weight"
        probe.weight.fill_(0.5)
        try:
            out = type(module).forward(probe, torch.ones([2, *_normalized_shape(probe)], dtype=torch.bfloat16))
        except (RuntimeError, TypeError):  # a class that takes no mixed dtypes: nothing to match
            return False
    return isinstance(out, Tensor) and out.dtype == torch.float32


# ---------------------------------------------------------------------------
# Finding and checking the norms
# ---------------------------------------------------------------------------


def find_norms(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """The RMSNorm modules of ``model`` as ``(qualified name, module, family)``.

    Raises:
        ValueError: if a module's class name says RMSNorm but its class is not in
            :data:`NORM_CLASSES` (nothing is guessed), naming every such class.
    """
    found, unknown = [], Counter()
    for name, module in model.named_modules():
        cls = type(module)
        if is_patched(module):
            cls = cls._spyre_ops_original_class
        family = NORM_CLASSES.get(cls.__name__)
        if family is not None:
            found.append((name, module, family))
        elif _LOOKS_LIKE_RMS_NORM.search(cls.__name__):
            unknown[f"{cls.__module__}.{cls.__qualname__}"] += 1
    if unknown:
        listed = ", ".join(f"{c} ({n} modules)" for c, n in unknown.items())
        raise ValueError(
            f"spyre_ops.transformers: unknown RMSNorm classes: {listed}. Nothing was patched. "
            f"Known families: {FAMILIES}. If a class computes one of them, declare it with "
            "spyre_ops.transformers.register_norm_class(cls, family)."
        )
    return found


def _check_family(module: nn.Module, family: str) -> None:
    """Refuses a class whose own forward does not compute ``family``'s formula.

    Runs a float32 CPU copy of ``module`` on a random input both ways. Skipped
    for modules on the meta device (no values to compare).
    """
    weight = getattr(module, "weight", None)
    if weight is not None and weight.device.type == "meta":
        return
    cls = type(module)  # patch() refuses patched modules before checking
    probe = copy.deepcopy(module).to(device="cpu", dtype=torch.float32)
    shape = _normalized_shape(probe)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn([3, *shape], generator=generator)
    if probe.weight is not None:
        with torch.no_grad():  # a weight away from 0 and 1 tells the families apart
            probe.weight.copy_(torch.rand(probe.weight.shape, generator=generator) + 0.5)
    with torch.no_grad():
        expected = cls.forward(probe, x)
        setattr(probe, _EPS_ATTR, _eps_attr(probe))
        setattr(probe, _PROMOTES_ATTR, False)
        probe._spyre_ops_shape = shape
        got = _FORWARDS[family](probe, x)
    if not isinstance(expected, Tensor) or expected.shape != got.shape or not torch.allclose(
        got, expected.to(got.dtype), rtol=1e-5, atol=1e-5
    ):
        diff = (got - expected).abs().max().item() if isinstance(expected, Tensor) and expected.shape == got.shape else "shape"
        raise ValueError(
            f"spyre_ops.transformers: {cls.__module__}.{cls.__qualname__} does not compute the "
            f"{family!r} family's formula ({FAMILIES[family]}) on a float32 probe (max |diff| {diff}); "
            "nothing was patched."
        )


# ---------------------------------------------------------------------------
# patch / unpatch
# ---------------------------------------------------------------------------


@dataclass
class PatchReport:
    """What :func:`patch` did.

    Attributes:
        modules: qualified module name -> ``"ClassName (family)"`` for every patched module.
        classes: patched module count per original class name.
    """

    model: nn.Module = field(repr=False)
    modules: dict[str, str] = field(default_factory=dict)
    classes: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.modules)

    def __str__(self) -> str:
        by_class = ", ".join(
            f"{n} x {c} ({NORM_CLASSES[c]})" for c, n in sorted(self.classes.items())
        )
        return f"spyre_ops.transformers: patched {len(self)} RMSNorm modules: {by_class or 'none'}"

    def undo(self) -> int:
        """Restores the original classes of the modules this patch changed; returns their count."""
        restored = 0
        for name, module in self.model.named_modules():
            if name in self.modules and is_patched(module):
                _restore(module)
                restored += 1
        return restored

    def __enter__(self) -> PatchReport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()


def _restore(module: nn.Module) -> None:
    module.__class__ = type(module)._spyre_ops_original_class
    eps_attr = module.__dict__.get(_EPS_ATTR)
    for attr in _PATCH_ATTRS:
        module.__dict__.pop(attr, None)
    if type(module.__dict__.get(eps_attr)) is _ConstantFloat:
        module.__dict__[eps_attr] = float(module.__dict__[eps_attr])


def patch(model: nn.Module, *, check: bool = True) -> PatchReport:
    """Routes every RMSNorm module of ``model`` to its family's library op.

    Args:
        model: any module tree (a transformers ``PreTrainedModel`` or a part of it).
        check: compare each class's own forward with its family's formula on a
            float32 probe before patching (a few milliseconds per class).

    Returns:
        A :class:`PatchReport` (its ``undo()`` reverts; also a context manager).

    Raises:
        ValueError: unknown RMSNorm classes, a class whose arithmetic is not its
            family's, a module without a float ``eps``, or one whose ``forward`` is
            set on the instance (it would bypass the patch); nothing is patched then.
        RuntimeError: if a module of ``model`` is already patched.
    """
    norms = find_norms(model)
    already = [name for name, module, _ in norms if is_patched(module)]
    if already:
        raise RuntimeError(
            f"spyre_ops.transformers.patch: {len(already)} modules are already patched "
            f"(e.g. {already[0]!r}); call unpatch(model) first"
        )
    overridden = [name for name, module, _ in norms if "forward" in module.__dict__]
    if overridden:
        raise ValueError(
            f"spyre_ops.transformers.patch: {len(overridden)} norm modules (e.g. {overridden[0]!r}) have "
            "a forward set on the instance (accelerate's offloading hooks, kernels' kernelize, ...), "
            "which would bypass the patched class; nothing was patched"
        )
    eps_attrs = {name: _eps_attr(module) for name, module, _ in norms}  # raises before any change
    promotes: dict[type, bool] = {}
    for _, module, family in norms:
        if type(module) not in promotes:
            if check:
                _check_family(module, family)
            promotes[type(module)] = _promotes(module)
    report = PatchReport(model)
    for name, module, family in norms:
        cls = type(module)
        eps_attr = eps_attrs[name]
        eps = getattr(module, eps_attr)
        if eps is not None:
            # a graph constant under torch.compile (see spyre_ops.nn._ConstantFloat); a
            # value set later is read as well, as a plain float
            setattr(module, eps_attr, _ConstantFloat(eps))
        setattr(module, _EPS_ATTR, eps_attr)
        setattr(module, _PROMOTES_ATTR, promotes[cls])
        module._spyre_ops_shape = _normalized_shape(module)
        module.__class__ = _patched_class(cls, family)
        report.modules[name] = f"{cls.__name__} ({family})"
        report.classes[cls.__name__] += 1
    return report


def unpatch(model: nn.Module) -> int:
    """Restores every module of ``model`` patched by :func:`patch`; returns how many."""
    restored = 0
    for module in model.modules():
        if is_patched(module):
            _restore(module)
            restored += 1
    return restored


def patched_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of ``model`` currently patched."""
    return ((n, m) for n, m in model.named_modules() if is_patched(m))
