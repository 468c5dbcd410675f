"""spyre_ops: RMSNorm for IBM Spyre and vLLM as ``torch.library`` ops.

Importing this package makes these ops exist (namespace ``spyre``):

* ``torch.ops.spyre.rms_norm(x, normalized_shape, weight=None, eps=1e-05)``
* ``torch.ops.spyre.fused_add_rms_norm(x, residual, normalized_shape, weight=None, eps=1e-05)``
  ``-> (out, x + residual)``
* ``torch.ops.spyre.fused_add_rms_norm_(...)``, its in-place form,

with C++ CPU kernels, Spyre (PrivateUse1) kernels (:mod:`spyre_ops.spyre`),
fake kernels for torch.compile and autograd. The Python
wrappers below and :class:`spyre_ops.nn.RMSNorm` are the documented entry points.
"""

from . import _library  # noqa: F401  (defines/adopts the schemas, registers C++ kernels)
from . import fake  # noqa: F401  (registers the fake kernels)
from . import nested  # noqa: F401  (jagged nested tensors)
from . import nn, spyre
from .ops import fused_add_rms_norm, fused_add_rms_norm_, rms_norm

__all__ = ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_", "nn"]
__version__ = "0.1.0"
