"""examples/vllm_provider.py runs and reports the spyre provider selected."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm_provider.py"


def test_example_runs():
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "spyre providers registered: True" in out
    assert "rms_norm: vLLM selected 'spyre'" in out
    assert "with variance_size=1024 it selects 'native'" in out
    assert "fused_add_rms_norm: vLLM selected 'spyre'" in out
    assert "tolerance" in out and out.count(": True") >= 4, out
