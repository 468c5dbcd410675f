"""What the ops write gets its version counter bumped, in every grad mode and
through both entry points, so that autograd catches a saved tensor that was
overwritten (instead of computing wrong gradients)."""

from __future__ import annotations

import contextlib

import pytest
import torch

import spyre_ops

MODES = {"grad mode": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def _out(entry: str, x: torch.Tensor, out: torch.Tensor) -> None:
    if entry == "wrapper":
        spyre_ops.rms_norm(x, x.shape[-1], None, 1e-6, out=out)
    else:
        torch.ops.spyre.rms_norm.out(x, [x.shape[-1]], None, 1e-6, out=out)


def _inplace(entry: str, x: torch.Tensor, residual: torch.Tensor) -> None:
    if entry == "wrapper":
        spyre_ops.fused_add_rms_norm_(x, residual, x.shape[-1], None, 1e-6)
    else:
        torch.ops.spyre.fused_add_rms_norm_(x, residual, [x.shape[-1]], None, 1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize("strided_out", [False, True])
def test_each_written_tensor_is_bumped_once(mode, entry, strided_out):
    x = torch.randn(4, 16)
    out = torch.empty(16, 4).t() if strided_out else torch.empty(4, 16)
    a, b = x.clone(), torch.randn(4, 16)
    v_out, v_a, v_b, v_x = out._version, a._version, b._version, x._version
    with MODES[mode]():
        _out(entry, x, out)
        _inplace(entry, a, b)
    assert (out._version - v_out, a._version - v_a, b._version - v_b, x._version - v_x) == (1, 1, 1, 0)


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize("op", ["out", "inplace x", "inplace residual"])
def test_overwriting_a_saved_tensor_in_inference_mode_is_caught(entry, op):
    leaf = torch.randn(4, 16, requires_grad=True)
    saved = leaf * 2
    loss = (saved * saved).sum()  # saves `saved` for backward
    plain = saved.detach()  # same storage and version counter, no grad
    other = torch.randn(4, 16)
    with torch.inference_mode():
        if op == "out":
            _out(entry, other, plain)
        elif op == "inplace x":
            _inplace(entry, plain, other)
        else:
            _inplace(entry, other, plain)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inference_tensor_written_outside_inference_mode_is_refused():
    with torch.inference_mode():
        out = torch.empty(4, 16)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        spyre_ops.rms_norm(torch.randn(4, 16), 16, None, 1e-6, out=out)
