"""The decompositions reach the table torch-spyre's compile uses, whatever the import order.

torch-spyre builds that table from Inductor's ``select_decomp_table()`` (on torch
2.13 ``fast_random_decomps()``, ``functools.cache``-d at the first compile in the
process) plus a table of its own. torch-spyre cannot be installed here, so each
test runs in a fresh process with a module named ``torch_spyre`` whose
``_inductor.decompositions`` offers the two functions spyre_ops relies on
(``get_spyre_decomp_table``, and optionally ``register_spyre_decompositions``),
written here from that description: a test double of the interface, not
torch-spyre's code.
"""

from __future__ import annotations

from spyre_subprocess import run_python

#: Makes "torch_spyre" importable with the given table builder source.
STUB = """
import sys, types, torch
from torch._inductor.decomposition import select_decomp_table
def _module(name):
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module
_module("torch_spyre"); _module("torch_spyre._inductor")
decompositions = _module("torch_spyre._inductor.decompositions")
"""


def _run(code: str) -> str:
    r = run_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_registered_after_the_table_was_cached():
    out = _run(STUB + """
# A first compile in the process has built and cached Inductor's table.
table_before = select_decomp_table()
decompositions.get_spyre_decomp_table = lambda: dict(select_decomp_table())

# The defect this guards against: a decomposition registered now is not seen.
from torch._inductor.decomposition import register_decomposition
register_decomposition([torch.ops.aten.erfinv.default])(lambda x: x)
print("defect reproduced:", torch.ops.aten.erfinv.default not in select_decomp_table())

import spyre_ops  # installs, since "torch_spyre" is loaded
ours = spyre_ops.spyre.torch_spyre.decomposition_table()
print("in select_decomp_table:", all(select_decomp_table().get(op) is fn for op, fn in ours.items()))
print("in torch-spyre's table:",
      all(decompositions.get_spyre_decomp_table().get(op) is fn for op, fn in ours.items()))
print("was cached without them:", not any(op in table_before for op in ours))
""")
    assert "defect reproduced: True" in out, out
    assert "in select_decomp_table: True" in out, out
    assert "in torch-spyre's table: True" in out, out
    assert "was cached without them: True" in out, out


def test_torch_spyre_table_and_loud_failures():
    out = _run(STUB + """
own = {}
def register_spyre_decompositions(ops):
    return torch._decomp.register_decomposition(ops, own)
frozen = dict(select_decomp_table())  # a table that never sees later registrations
decompositions.register_spyre_decompositions = register_spyre_decompositions
decompositions.get_spyre_decomp_table = lambda: {**frozen, **own}

import spyre_ops
from spyre_ops.spyre import torch_spyre
ours = torch_spyre.decomposition_table()
print("registered in torch-spyre's own table:", all(own.get(op) is fn for op, fn in ours.items()))

# A torch-spyre whose table misses them: installing raises.
decompositions.get_spyre_decomp_table = lambda: dict(frozen)
try:
    torch_spyre.install()
    print("no error")
except RuntimeError as e:
    print("missing:", "get_spyre_decomp_table())" in str(e)
          and "lacks the decompositions of spyre.rms_norm.default" in str(e))

# A torch-spyre without the table builder: raises too.
del decompositions.get_spyre_decomp_table
try:
    torch_spyre.install()
    print("no error")
except RuntimeError as e:
    print("no builder:", "get_spyre_decomp_table does not exist" in str(e))
""")
    assert "registered in torch-spyre's own table: True" in out, out
    assert "missing: True" in out, out
    assert "no builder: True" in out, out
    assert "no error" not in out, out
