"""spyre_ops.emulator.enable() is thread-safe: called from several threads at
once (in a fresh process, where nothing is enabled yet), every call returns
and the device works."""

from __future__ import annotations

from spyre_subprocess import run_python


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
