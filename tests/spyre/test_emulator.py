"""The emulated spyre device itself: a PrivateUse1 backend over host memory.

It must behave like a device for the tests to mean anything (creation, copies,
views, comparisons), install once per process, and refuse to start beside
torch-spyre or another PrivateUse1 backend (those checks run in fresh processes).
"""

from __future__ import annotations


import pytest
import torch
from spyre_subprocess import run_python

import spyre_ops.emulator as emulator


def test_tensors_on_the_device(spyre_device):
    x = torch.arange(24, dtype=torch.float32).view(4, 6)
    d = x.to("spyre")
    assert d.device == torch.device("spyre", 0) and d.is_spyre
    assert torch.empty(3, 5, device="spyre", dtype=torch.bfloat16).device.type == "spyre"
    assert torch.equal(d.cpu(), x)
    assert torch.equal(d.t()[1:, ::2].cpu(), x.t()[1:, ::2])
    assert torch.equal(d.reshape(2, 12).cpu(), x.reshape(2, 12))
    assert torch.equal(d.to(torch.float16).cpu(), x.to(torch.float16))
    torch.testing.assert_close(d * 2 + 1, (x * 2 + 1).to("spyre"))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(d, (x + 1).to("spyre"))
    with pytest.raises(RuntimeError, match="there is one device, spyre:0; got spyre:1"):
        torch.empty(2, device="spyre:1")


def test_device_module(spyre_device):
    assert torch.spyre.is_available() and torch.spyre.device_count() == 1
    assert torch.spyre.current_device() == 0
    torch.spyre.synchronize()
    state = torch.spyre.get_rng_state()
    a = torch.randn(4, device="spyre")
    torch.spyre.set_rng_state(state)
    b = torch.randn(4, device="spyre")
    assert torch.equal(a.cpu(), b.cpu())
    torch.spyre.manual_seed(3)
    c = torch.randn(4, device="spyre")
    torch.spyre.manual_seed(3)
    assert torch.equal(c.cpu(), torch.randn(4, device="spyre").cpu())


def test_enable_is_idempotent(spyre_device):
    emulator.enable()
    emulator.enable()
    assert torch._C._get_privateuse1_backend_name() == "spyre"


def test_installing_twice_is_refused(spyre_device):
    from spyre_ops.emulator import _C

    with pytest.raises(RuntimeError, match="already installed in this process; it cannot be installed twice"):
        _C.install()


def test_refuses_beside_another_privateuse1_backend():
    r = run_python("""
        import torch
        torch.utils.rename_privateuse1_backend("foo")
        import spyre_ops.emulator as emulator
        try:
            emulator.enable()
        except RuntimeError as e:
            print("REFUSED:", e)
        print("name:", torch._C._get_privateuse1_backend_name(), "enabled:", emulator.is_enabled())
    """)
    assert r.returncode == 0, r.stderr
    assert "REFUSED: spyre_ops.emulator.enable(): the PrivateUse1 backend is already named 'foo'" in r.stdout
    assert "name: foo enabled: False" in r.stdout


def test_refuses_beside_torch_spyre():
    # torch-spyre cannot be installed here: a module of its name stands in for it
    # (with the decomposition-table builder import spyre_ops checks).
    r = run_python("""
        import sys, types
        from torch._inductor.decomposition import select_decomp_table
        for name in ("torch_spyre", "torch_spyre._inductor", "torch_spyre._inductor.decompositions"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torch_spyre._inductor.decompositions"].get_spyre_decomp_table = select_decomp_table
        import torch
        import spyre_ops.emulator as emulator
        try:
            emulator.enable()
        except RuntimeError as e:
            print("REFUSED:", e)
        print("name:", torch._C._get_privateuse1_backend_name(), "enabled:", emulator.is_enabled())
    """)
    assert r.returncode == 0, r.stderr
    assert "REFUSED: spyre_ops.emulator.enable(): torch-spyre is loaded in this process" in r.stdout
    assert "name: privateuseone enabled: False" in r.stdout


def test_transfers_needs_enable_and_main_library_does_not_load_emulator():
    r = run_python("""
        import sys
        import spyre_ops, spyre_ops.emulator as emulator
        print("emulator loaded:", "spyre_ops.emulator._C" in sys.modules)
        try:
            with emulator.transfers():
                pass
        except RuntimeError as e:
            print("REFUSED:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "emulator loaded: False" in r.stdout
    assert "REFUSED: spyre_ops.emulator.transfers(): call spyre_ops.emulator.enable() first" in r.stdout


def test_copies_convert_as_the_device_does(spyre_device):
    # 16-bit floats live on the device as SEN169 (9 mantissa bits): 1 + 2**-10 (an fp16 value)
    # does not survive a round trip, fp16 subnormals arrive halved, values beyond fp16's 65504
    # live on the device and come back to a host fp16 tensor as Inf, and exactly through fp32.
    one_plus = torch.tensor([1 + 2.0 ** -10, 1 + 2.0 ** -9], dtype=torch.float16)
    back = one_plus.to(spyre_device).cpu()
    assert back[0] != one_plus[0] and back[1] == one_plus[1]
    sub = torch.tensor([2.0 ** -20], dtype=torch.float16)  # an IEEE fp16 subnormal
    assert sub.to(spyre_device).float().cpu().item() == 2.0 ** -21
    big = torch.tensor([1e5, -3e9], dtype=torch.float32).to(spyre_device).to(torch.float16)
    assert torch.isinf(big.cpu()).all()
    assert torch.equal(big.float().cpu(), torch.tensor([99968.0, -2998927360.0]))
    # fp16 and bf16 are one format on the device: converting between them keeps the value.
    assert torch.equal(big.to(torch.bfloat16).float().cpu(), big.float().cpu())
