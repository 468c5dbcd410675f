"""spyre_ops: RMSNorm for IBM Spyre and vLLM as ``torch.library`` ops.

Importing this package makes these ops exist (namespace ``spyre``):

* ``torch.ops.spyre.rms_norm(x, normalized_shape, weight=None, eps=1e-05)``
* ``torch.ops.spyre.fused_add_rms_norm(x, residual, normalized_shape, weight=None, eps=1e-05)``
  ``-> (out, x + residual)``
* ``torch.ops.spyre.fused_add_rms_norm_(...)``, its in-place form,

and Gemma's ``(1 + weight)`` forms of the three, in a namespace of their own
(torch-spyre owns ``spyre``): ``torch.ops.spyre_ops.gemma_rms_norm``,
``gemma_fused_add_rms_norm`` and ``gemma_fused_add_rms_norm_`` (eps 1e-6 by default),

with C++ CPU kernels, Spyre (PrivateUse1) kernels (:mod:`spyre_ops.spyre`),
fake kernels for torch.compile and autograd. The Python wrappers below,
:class:`spyre_ops.nn.RMSNorm` and :class:`spyre_ops.nn.GemmaRMSNorm` are the
documented entry points.
"""

import torch as _torch

from . import _torch_check

# The kernels load only into the torch release they were built against: say so
# plainly rather than with an "undefined symbol" error.
_torch_check.check(_torch.__version__)
try:
    from . import _C  # noqa: F401
except ImportError as _error:
    if "undefined symbol" not in str(_error):
        raise
    raise _torch_check.explain_load_error(_error, _torch.__version__) from _error

from . import _library  # noqa: E402,F401  (defines/adopts the schemas, registers C++ kernels)
from . import fake  # noqa: E402,F401  (registers the fake kernels)
from . import nested  # noqa: E402,F401  (jagged nested tensors)
from . import nn, spyre  # noqa: E402
from .ops import (  # noqa: E402
    fused_add_rms_norm,
    fused_add_rms_norm_,
    gemma_fused_add_rms_norm,
    gemma_fused_add_rms_norm_,
    gemma_rms_norm,
    rms_norm,
)

__all__ = [
    "rms_norm",
    "fused_add_rms_norm",
    "fused_add_rms_norm_",
    "gemma_rms_norm",
    "gemma_fused_add_rms_norm",
    "gemma_fused_add_rms_norm_",
    "nn",
]
__version__ = "0.1.0"
