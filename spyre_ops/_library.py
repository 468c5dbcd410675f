"""Defines (or adopts) the ``spyre`` op schemas and registers the C++ CPU and autograd kernels and the Spyre kernels.

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
"""

from __future__ import annotations

import torch

from . import _C

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

#: The library object that owns the schemas this package defined itself.
lib = torch.library.Library(NAMESPACE, "FRAGMENT")

#: Op names that existed before spyre_ops was imported and were adopted.
adopted: list[str] = []


def _existing_schema(name: str) -> torch._C.FunctionSchema | None:
    """The schema of ``spyre::<name>`` (``op`` or ``op.overload``), if anything defined it."""
    op, _, overload = name.partition(".")
    for schema in torch._C._jit_get_schemas_for_operator(f"{NAMESPACE}::{op}"):
        if schema.overload_name == overload:
            return schema
    return None


def _define_or_adopt(name: str, schema: str) -> None:
    existing = _existing_schema(name)
    if existing is None:
        lib.define(schema, tags=(torch.Tag.pt2_compliant_tag,))
        return
    ours = torch._C.parse_schema(f"{NAMESPACE}::{schema}")
    if str(existing) != str(ours):
        raise RuntimeError(
            f"spyre_ops: the operator {NAMESPACE}::{name} is already defined, by another "
            f"library, with a different schema, so spyre_ops cannot provide it.\n"
            f"  already defined: {existing}\n"
            f"  spyre_ops needs: {ours}"
        )
    adopted.append(name)


for _name, _schema in SCHEMAS.items():
    _define_or_adopt(_name, _schema)

_C.register_cpu_kernels()
_C.register_autograd_kernels()

from .spyre import kernels as _spyre_kernels  # noqa: E402

_spyre_kernels.register(lib)
