"""benchmarks/bench_host_overhead.py on the CPU: every row timed and written."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_host_overhead_rows(tmp_path):
    out = tmp_path / "host.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_host_overhead.py"), "--device", "cpu",
                             "--calls", "12", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = report["us_per_call"]
    assert {"FakeQuantize call, training", "GCN 3 layers W4A4, train forward + backward"} <= set(rows)
    assert all(v > 0 for v in rows.values()) and report["qgnn"]  # this tree's commit
