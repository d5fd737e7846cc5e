"""benchmarks/diagnostics/host_op_census.py: both phases counted, lines inside qgnn named."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_census_counts_both_phases():
    env = dict(os.environ, QGNN_FORCE_TRITON="1", TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "diagnostics" / "host_op_census.py"),
                             "--set", "quant.method=qat", "--top", "40"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== train epoch:" in out and "== evaluation:" in out
    assert "qgnn/quant/observers.py" in out  # the observers update their ranges while training
