"""spyre_ops quick start: the op in eager mode, in a compiled graph, and under autograd.

Run with `make demo` (or `python examples/quickstart.py` once installed).
"""

import torch

import spyre_ops
from spyre_ops.nn import RMSNorm

torch.manual_seed(0)
hidden = 4096

# 1. Eager: the library op, and the nn.Module drop-in.
x = torch.randn(8, hidden, dtype=torch.bfloat16)
weight = torch.rand(hidden, dtype=torch.float32)  # an fp32 weight with bf16 activations
y = spyre_ops.rms_norm(x, hidden, weight, eps=1e-6)
ref = (x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)) * weight.double()
print(f"eager:     y {tuple(y.shape)} {y.dtype}, max |y - float64 ref| = "
      f"{(y.double() - ref).abs().max().item():.2e}")

norm = RMSNorm(hidden, eps=1e-6, dtype=torch.bfloat16)
residual = torch.randn_like(x)
out, new_residual = norm(x, residual)
print(f"fused:     out {tuple(out.shape)}, new_residual == x + residual: "
      f"{torch.equal(new_residual, x + residual)}")


# 2. torch.compile: the op is one node in the captured graph, with dynamic token counts.
class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden, dtype=torch.bfloat16)
        self.proj = torch.nn.Linear(hidden, hidden, bias=False, dtype=torch.bfloat16)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(h))


graphs = []


def show_graph(gm: torch.fx.GraphModule, example_inputs):
    graphs.append(gm)
    print("compiled:  captured FX graph:")
    print("\n".join("    " + line for line in gm.code.strip().splitlines()))
    return gm.forward


block = Block()
compiled = torch.compile(block, backend=show_graph, fullgraph=True, dynamic=True)
for tokens in (3, 17, 250):
    h = torch.randn(tokens, hidden, dtype=torch.bfloat16)
    torch.testing.assert_close(compiled(h), block(h))
print(f"compiled:  3 token counts, {len(graphs)} graph(s) captured, results match eager")

# 3. Autograd: the backward is a library op too.
xg = torch.randn(4, 64, dtype=torch.float64, requires_grad=True)
wg = torch.randn(64, dtype=torch.float64, requires_grad=True)
ok = torch.autograd.gradcheck(lambda a, b: spyre_ops.rms_norm(a, 64, b), (xg, wg))
print(f"autograd:  gradcheck in float64: {ok}")
