"""Threads on the emulated spyre device: spyre_ops.emulator.enable() called
from several threads at once (in a fresh process, where nothing is enabled yet)
returns in every one and the device works; first calls from several threads at
once, each needing a graph traced or compiled, all succeed with right results."""

from __future__ import annotations

import threading

import pytest
import torch
from reference import rms_norm_ref
from spyre_subprocess import run_python
from spyre_tolerances import assert_close

import spyre_ops
from spyre_ops.spyre import graphs


def test_enable_from_four_threads_at_once():
    result = run_python(
        """
        import threading
        import torch
        import spyre_ops
        import spyre_ops.emulator as emulator

        start = threading.Barrier(4)
        errors = []

        def worker():
            start.wait()
            try:
                emulator.enable()
            except Exception as e:  # collected, printed below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("errors", errors)
        assert not errors, errors
        assert emulator.is_enabled()
        x = torch.randn(2, 64).to("spyre")
        y = spyre_ops.rms_norm(x, 64)
        assert y.device.type == "spyre"
        torch.testing.assert_close(y.cpu(), spyre_ops.rms_norm(x.cpu(), 64), atol=2e-3, rtol=2e-3)
        print("ok")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def _first_calls_from_threads(make_call, n_threads: int = 8) -> list[str]:
    """Runs make_call(i)() in n_threads threads released at once; the errors they raised."""
    start = threading.Barrier(n_threads)
    errors: list[str] = []

    def worker(i: int) -> None:
        call = make_call(i)
        start.wait()
        try:
            call()
        except Exception as e:  # collected, asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_first_calls_each_tracing_a_graph(spyre_device):
    # Each thread's call needs a graph traced for it (an eps of its own): make_fx
    # is not thread-safe, so the traces must not run at the same time.
    for r in range(5):
        graphs.clear()
        x = torch.randn(4, 64)
        results: dict[int, torch.Tensor] = {}

        def make_call(i: int):
            eps = 1e-6 * (1 + i + 8 * r)
            xd = x.to(spyre_device)
            return lambda: results.__setitem__(i, spyre_ops.rms_norm(xd, 64, None, eps).cpu())

        assert _first_calls_from_threads(make_call) == []
        for i, y in results.items():
            expected = rms_norm_ref(x, [64], None, 1e-6 * (1 + i + 8 * r))
            assert_close(y, expected, torch.float32, torch.float16)
        assert len(results) == 8


def test_concurrent_first_calls_sharing_one_trace(spyre_device):
    # One trace key (same dtypes and eps), a new shape in each thread: one trace, eight graphs.
    graphs.clear()
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_call(i: int):
        x = torch.randn(i + 1, 64)
        xd = x.to(spyre_device)
        return lambda: results.__setitem__(i, (x, spyre_ops.rms_norm(xd, 64, None, 1e-5).cpu()))

    assert _first_calls_from_threads(make_call) == []
    assert len(results) == 8
    for x, y in results.values():
        assert_close(y, rms_norm_ref(x, [64], None, 1e-5), torch.float32, torch.float16)
