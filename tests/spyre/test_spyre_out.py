"""rms_norm.out on spyre tensors: the Spyre kernel into a preallocated tensor."""

from __future__ import annotations

import pytest
import torch

import spyre_ops
import spyre_ops.emulator as emulator


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_weight", [True, False])
def test_out_equals_functional_and_stays_on_device(spyre_device, dtype, with_weight):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(12, 256, generator=g) * 300).to(dtype).to(spyre_device)
    w = torch.rand(256, generator=g).to(spyre_device) if with_weight else None
    expected = torch.ops.spyre.rms_norm(x, [256], w, 1e-6)
    out = torch.full_like(x, float("nan"))
    with emulator.transfers() as t:
        result = spyre_ops.rms_norm(x, 256, w, 1e-6, out=out)
    assert result is out
    assert (t.host_to_device, t.device_to_host) == (0, 0) and not t.fallbacks, dict(t.fallbacks)
    assert torch.equal(out.cpu(), expected.cpu())


def test_out_may_be_x_or_strided(spyre_device):
    x = torch.randn(6, 128).to(spyre_device)
    expected = torch.ops.spyre.rms_norm(x, [128], None, 1e-5).cpu()
    strided = torch.empty(128, 6, device=spyre_device).t()
    torch.ops.spyre.rms_norm.out(x, [128], None, 1e-5, out=strided)
    assert torch.equal(strided.cpu(), expected)
    torch.ops.spyre.rms_norm.out(x, [128], None, 1e-5, out=x)
    assert torch.equal(x.cpu(), expected)


def test_out_errors(spyre_device):
    x = torch.randn(4, 8, 16, device=spyre_device)
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: out has shape \[4, 8\] but x has shape"):
        torch.ops.spyre.rms_norm.out(x, [16], None, 1e-5, out=torch.empty(4, 8, device=spyre_device))
    with pytest.raises(RuntimeError, match=r"spyre::rms_norm.out: on Spyre only the last dimension"):
        torch.ops.spyre.rms_norm.out(x, [8, 16], None, 1e-5, out=torch.empty_like(x))
    with pytest.raises(RuntimeError, match=r"out is on cpu but x is on spyre:0"):
        torch.ops.spyre.rms_norm.out(x, [16], None, 1e-5, out=torch.empty(4, 8, 16))


def test_opcheck_out_on_spyre(spyre_device):
    x = torch.randn(5, 64).to(spyre_device)
    w = torch.rand(64).to(spyre_device)
    torch.library.opcheck(torch.ops.spyre.rms_norm.out, (x, [64], w, 1e-6), {"out": torch.empty_like(x)})


def _first_line_of_error(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value).split("\n")[0]


def test_wrapper_raises_what_torch_ops_raises(spyre_device):
    # The wrappers' direct calls (spyre_ops._C.*) reach the Spyre kernels
    # through the dispatcher: the errors are the kernels' own.
    x = torch.randn(4, 8, 16, device=spyre_device)
    cases = [
        (lambda: spyre_ops.rms_norm(x, [8, 16], None, 1e-5, out=torch.empty_like(x)),
         lambda: torch.ops.spyre.rms_norm.out(x, [8, 16], None, 1e-5, out=torch.empty_like(x))),
        (lambda: spyre_ops.rms_norm(x, 16, None, 1e-5, out=torch.empty(4, 8, 16)),
         lambda: torch.ops.spyre.rms_norm.out(x, [16], None, 1e-5, out=torch.empty(4, 8, 16))),
        (lambda: spyre_ops.fused_add_rms_norm_(x, x, 16, None, 1e-5),
         lambda: torch.ops.spyre.fused_add_rms_norm_(x, x, [16], None, 1e-5)),
    ]
    for wrapper, direct in cases:
        got, expected = _first_line_of_error(wrapper), _first_line_of_error(direct)
        assert got == expected and "spyre::" in got[1]
