"""benchmarks/run_ab_epoch.sh on the CPU at a tiny size, with this tree as both sides."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ab_epoch_alternates_trees_and_summarises(tmp_path):
    env = dict(os.environ, DEVICE="cpu", SIZE="300,1000,8,4", EPOCHS="2", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "run_ab_epoch.sh"), str(REPO), str(tmp_path),
                             "1", "w4a4"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in (tmp_path / "ab").glob("*.json"))
    assert runs == ["base_w4a4_1.json", "head_w4a4_1.json"]
    summary = json.loads((tmp_path / "ab_summary.json").read_text())
    for tree in ("base", "head"):
        run = json.loads((tmp_path / "ab" / f"{tree}_w4a4_1.json").read_text())
        assert summary["w4a4"][tree]["train_ms"] == run["seconds_per_epoch"] * 1e3
        assert run["method"] == "qat" and run["dataset"]["nodes"] == 300
    assert result.stdout.startswith("w4a4") and "train base" in result.stdout


def test_ab_epoch_profiles_and_reports_the_profiled_time(tmp_path):
    env = dict(os.environ, DEVICE="cpu", SIZE="300,1000,8,4", EPOCHS="1", PYTHON=sys.executable, PROFILE="1")
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "run_ab_epoch.sh"), str(REPO), str(tmp_path),
                             "1", "lorap_alone"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "ab_summary.json").read_text())
    for tree in ("base", "head"):
        prof = (tmp_path / "ab" / f"{tree}_lorap_alone_1.prof.txt").read_text()
        assert "== train epoch" in prof
        assert summary["lorap_alone"][tree]["profiled_train_ms"] > 0
        run = json.loads((tmp_path / "ab" / f"{tree}_lorap_alone_1.json").read_text())
        assert "prompt.aggregation=lorap" in run["overrides"]
        assert not any(o.startswith("prompt.node") for o in run["overrides"])
    assert "profiled kernel time" in result.stdout
