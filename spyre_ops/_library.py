"""Defines (or adopts) the ``spyre`` op schemas, defines the ``spyre_ops`` ones (the Gemma
ops), and registers the C++ CPU and autograd kernels and the Spyre kernels.

The schemas are defined from Python rather than with ``TORCH_LIBRARY`` in C++
because torch-spyre may already have defined ``spyre::rms_norm`` (with
``torch.library.custom_op``, at autoload) before this package is imported.
For each op:

* not defined yet: it is defined here, in a ``FRAGMENT`` library;
* defined with exactly our schema: it is *adopted*: we add kernels, the fake
  kernel and autograd to it and never redefine it;
* defined with another schema: importing spyre_ops raises ``RuntimeError``
  naming both schemas (loading ``spyre_ops._C`` itself never raises, since it
  registers nothing until :func:`_register_cpu_kernels` is called).

The Gemma ops (:data:`GEMMA_SCHEMAS`) live in the namespace ``spyre_ops``, which
torch-spyre never uses, so they are always defined here (nothing to adopt).
"""

from __future__ import annotations

import torch

from . import _C
from ._variants import GEMMA, VARIANTS

NAMESPACE = "spyre"

#: The schemas of the ops this package provides, by op name (``name.overload``
#: for an overload). ``rms_norm`` is, to the letter, the schema torch-spyre
#: gives its own ``spyre::rms_norm``.
SCHEMAS: dict[str, str] = {
    "rms_norm": (
        "rms_norm(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, "
        "float eps=1e-05) -> Tensor"
    ),
    "rms_norm.out": (
        "rms_norm.out(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, "
        "float eps=1e-05, *, Tensor(a!) out) -> Tensor(a!)"
    ),
    "fused_add_rms_norm": (
        "fused_add_rms_norm(Tensor x, Tensor residual, SymInt[] normalized_shape, "
        "Tensor? weight=None, float eps=1e-05) -> (Tensor, Tensor)"
    ),
    "fused_add_rms_norm_": (
        "fused_add_rms_norm_(Tensor(a!) x, Tensor(b!) residual, SymInt[] normalized_shape, "
        "Tensor? weight=None, float eps=1e-05) -> ()"
    ),
    "rms_norm_backward": (
        "rms_norm_backward(Tensor grad_out, Tensor x, SymInt[] normalized_shape, "
        "Tensor? weight, float eps) -> (Tensor, Tensor)"
    ),
}

#: The schemas of the Gemma ops (namespace ``spyre_ops``, see :mod:`spyre_ops._variants`):
#: the rows of :data:`SCHEMAS` with ``gemma_`` names and Gemma's eps, 1e-6.
GEMMA_SCHEMAS: dict[str, str] = {
    "gemma_rms_norm": (
        "gemma_rms_norm(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, "
        "float eps=1e-06) -> Tensor"
    ),
    "gemma_rms_norm.out": (
        "gemma_rms_norm.out(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, "
        "float eps=1e-06, *, Tensor(a!) out) -> Tensor(a!)"
    ),
    "gemma_fused_add_rms_norm": (
        "gemma_fused_add_rms_norm(Tensor x, Tensor residual, SymInt[] normalized_shape, "
        "Tensor? weight=None, float eps=1e-06) -> (Tensor, Tensor)"
    ),
    "gemma_fused_add_rms_norm_": (
        "gemma_fused_add_rms_norm_(Tensor(a!) x, Tensor(b!) residual, SymInt[] normalized_shape, "
        "Tensor? weight=None, float eps=1e-06) -> ()"
    ),
    "gemma_rms_norm_backward": (
        "gemma_rms_norm_backward(Tensor grad_out, Tensor x, SymInt[] normalized_shape, "
        "Tensor? weight, float eps) -> (Tensor, Tensor)"
    ),
}

#: The library object that owns the schemas this package defined itself.
lib = torch.library.Library(NAMESPACE, "FRAGMENT")

#: The library of the ``spyre_ops`` namespace (the Gemma ops).
gemma_lib = torch.library.Library(GEMMA.namespace, "FRAGMENT")

#: The library holding each namespace's schemas and kernels.
LIBRARIES: dict[str, torch.library.Library] = {NAMESPACE: lib, GEMMA.namespace: gemma_lib}

#: Op names that existed before spyre_ops was imported and were adopted.
adopted: list[str] = []


def _existing_schema(name: str, namespace: str = NAMESPACE) -> torch._C.FunctionSchema | None:
    """The schema of ``<namespace>::<name>`` (``op`` or ``op.overload``), if anything defined it."""
    op, _, overload = name.partition(".")
    for schema in torch._C._jit_get_schemas_for_operator(f"{namespace}::{op}"):
        if schema.overload_name == overload:
            return schema
    return None


def _define_or_adopt(name: str, schema: str, namespace: str = NAMESPACE) -> bool:
    """Defines ``<namespace>::<schema>`` unless it exists with exactly that schema; True if it existed.
    (For ``spyre_ops::`` that happens only when this module is imported again.)"""
    existing = _existing_schema(name, namespace)
    if existing is None:
        LIBRARIES[namespace].define(schema, tags=(torch.Tag.pt2_compliant_tag,))
        return False
    ours = torch._C.parse_schema(f"{namespace}::{schema}")
    if str(existing) != str(ours):
        raise RuntimeError(
            f"spyre_ops: the operator {namespace}::{name} is already defined, by another "
            f"library, with a different schema, so spyre_ops cannot provide it.\n"
            f"  already defined: {existing}\n"
            f"  spyre_ops needs: {ours}"
        )
    return True


for _name, _schema in SCHEMAS.items():
    if _define_or_adopt(_name, _schema):
        adopted.append(_name)
for _name, _schema in GEMMA_SCHEMAS.items():
    _define_or_adopt(_name, _schema, GEMMA.namespace)

_C.register_cpu_kernels()
_C.register_autograd_kernels()

from .spyre import kernels as _spyre_kernels  # noqa: E402

for _variant in VARIANTS:
    _spyre_kernels.register(LIBRARIES[_variant.namespace], _variant)
