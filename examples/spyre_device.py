"""spyre_ops on the emulated spyre device: the Spyre kernels, and what a call moves.

The emulated device (spyre_ops.emulator) is PyTorch's PrivateUse1 device named
"spyre", as torch-spyre names it, over host memory. It proves dispatch, device
residency and the numerics of the Spyre formula, not speed or the hardware's
own rounding. Run with `make demo` (or `python examples/spyre_device.py`).
"""

import torch

import spyre_ops
import spyre_ops.emulator as emulator

emulator.enable()
torch.manual_seed(0)
hidden = 4096


def outlier_rows(dtype: torch.dtype) -> torch.Tensor:
    """Rows with max |x| from 1e-3 to 60000, one ordinary row with a 60000 channel, a zero row."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for scale in (1e-3, 1.0, 300.0, 3000.0, 60000.0):
        r = torch.randn(hidden, generator=g, dtype=torch.float64)
        rows.append(r / r.abs().max() * scale)
    spike = torch.randn(hidden, generator=g, dtype=torch.float64)
    spike[7] = 60000.0
    rows += [spike, torch.zeros(hidden, dtype=torch.float64)]
    return torch.stack(rows).to(dtype)


def reference(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xd = x.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * w.double()


# 1. The op on spyre tensors, with the transfer counter around the call.
w_host = torch.rand(hidden, dtype=torch.float16) + 0.5
x = outlier_rows(torch.float16).to("spyre")
w = w_host.to("spyre")
with emulator.transfers() as t:
    y = spyre_ops.rms_norm(x, hidden, w, eps=1e-6)
    out, new_residual = spyre_ops.fused_add_rms_norm(x, y, hidden, w, eps=1e-6)
print(f"on device: y on {y.device}, {y.dtype}; inside the two calls: "
      f"{t.host_to_device} host->device and {t.device_to_host} device->host copies, "
      f"{sum(t.fallbacks.values())} ops off the device list")
print(f"           {t.compiles} graphs compiled (one per op and shape), {t.launches} launched; ops inside them:",
      ", ".join(f"{op.removeprefix('aten::')} x{n}" for op, n in sorted(t.graph_ops.items())))
print("           eager ops around them:", ", ".join(f"{op.removeprefix('aten::')} x{n}" for op, n in sorted(t.ops.items())))

with emulator.transfers() as t:
    y_host = y.cpu()
print(f"reading y back: {t.device_to_host} device->host copy ({t.device_to_host_bytes} bytes)")

# 2. Accuracy on outlier rows (|x| up to 60000) and tiny rows (|x| ~ 1e-3), per dtype,
#    against a float64 reference; next to it the plain fp16 formula x*rsqrt(mean(x^2)+eps).
#    "of tolerance": the worst max(|error| / (atol + rtol*|ref|)) at the tolerance the tests
#    use (fp16 compute: vLLM's atol 1e-2 rtol 2e-3, bf16 output 8e-3/8e-3; fp32 compute on
#    fp32: 1e-5/1e-5); at most 1 passes.
TOL = {(torch.float16, "fp16"): (1e-2, 2e-3), (torch.bfloat16, "fp16"): (8e-3, 8e-3),
       (torch.float32, "fp16"): (1e-2, 2e-3), (torch.float16, "fp32"): (1e-3, 1e-3),
       (torch.bfloat16, "fp32"): (8e-3, 8e-3), (torch.float32, "fp32"): (1e-5, 1e-5)}


def report(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, compute: str) -> str:
    atol, rtol = TOL[(dtype, compute)]
    err = (got - ref).abs()
    return f"max |error| {err.max().item():.2e} ({(err / (atol + rtol * ref.abs())).max().item():.2f} of tolerance)"


print("on outlier and tiny rows, vs float64:")
for dtype in (torch.float16, torch.bfloat16, torch.float32):
    xh = outlier_rows(dtype)
    wh = w_host.to(dtype)
    ref = reference(xh, wh, 1e-6)
    got = spyre_ops.rms_norm(xh.to("spyre"), hidden, wh.to("spyre"), eps=1e-6).cpu().double()
    with spyre_ops.spyre.use_compute_dtype(torch.float32):
        got32 = spyre_ops.rms_norm(xh.to("spyre"), hidden, wh.to("spyre"), eps=1e-6).cpu().double()
    print(f"  {str(dtype):15} fp16 compute (default): {report(got, ref, dtype, 'fp16')}; "
          f"fp32 compute: {report(got32, ref, dtype, 'fp32')}")
x16 = outlier_rows(torch.float16)
plain = (x16 * torch.rsqrt(x16.pow(2).mean(-1, keepdim=True) + 1e-6) * w_host).double()
print(f"  plain fp16 formula x*rsqrt(mean(x*x)+eps) on float16: "
      f"{report(plain, reference(x16, w_host, 1e-6), torch.float16, 'fp16')} (x*x overflows above |x| = 256)")
