"""The LoRAP kernel experiments call the kernels with their raw signatures; run them on the CPU
(Triton's interpreter, tiny sizes, no timing) so that a kernel change cannot leave them broken."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# find_spec, not importorskip: importing triton in this process before tests/kernels/conftest.py
# sets TRITON_INTERPRET would leave that suite's kernels half compiled, half interpreted
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "benchmarks" / "experiments"


def run(script, tmp_path, **env):
    env = dict(os.environ, DEV="cpu", ROUNDS="0", TRITON_INTERPRET="1", OUT=str(tmp_path), **env)
    result = subprocess.run([sys.executable, str(EXPERIMENTS / script)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((tmp_path / (script[:-3] + ".json")).read_text())


def assert_small(errors):
    errors = list(errors)
    assert errors and all(math.isfinite(e) and e < 1e-5 for e in errors), errors


def test_backward_parts(tmp_path):
    res = run("lorap_backward_parts.py", tmp_path, NROWS="100", VARIANTS="[[32, 64, 2, 2, 3]]")
    assert_small([res["torch_mm_dwa_err"], res["library_dwa_err"], res["backward_dwa_err"]]
                 + [row["rel_err"] for row in res["splitk"].values()])


def test_forward_occupancy_with_backward_variants(tmp_path):
    res = run("lorap_forward_occupancy.py", tmp_path, NROWS="100", ALPHA="0", D="40",
              VARIANTS="[[64, 64, 4, 2, 2, true, 160]]", BWD_VARIANTS="[[32, 64, 2, null, 2]]")
    assert not res["store_alpha"]
    assert_small(row["rel_err"] for row in res["variants"].values())
    assert_small(row["rel_diff_vs_default"] for row in res["backward"].values())


def test_narrow_widths(tmp_path):
    res = run("lorap_narrow.py", tmp_path, NROWS="80", WIDTHS="40,7")
    for rows in res["widths"].values():
        assert_small(row["rel_err"] for name, row in rows.items() if "rel_err" in row)
        assert not [name for name, row in rows.items() if "error" in row]


def test_input_grid(tmp_path):
    res = run("lorap_input_grid.py", tmp_path, NROWS="100", QGNN_FORCE_TRITON="1")
    for d in ("d=256", "d=40"):
        errors = res[d]["max_rel_error"]
        assert_small([errors["separate"], errors["inside"]])
        assert errors["boundary_elements_differing"] == 0


def test_epoch_kernel_census_runs_on_the_cpu(tmp_path):
    res = run("epoch_kernel_census.py", tmp_path, SIZE="200,600,8,3",
              RUNS="w4a4 lorap_alone+fused_adam lorap_unfused")
    assert set(res) == {"w4a4", "lorap_alone+fused_adam", "lorap_unfused"}


def test_pass_costs(tmp_path):
    res = run("lorap_pass_costs.py", tmp_path, NROWS="100", REPS="1", QGNN_FORCE_TRITON="1")
    for d in ("d=256", "d=40"):
        assert len(res[d]) == 6 and all("kernels" in row for row in res[d].values())


def test_epoch_call_tunables(tmp_path):
    res = run("lorap_epoch_call_tunables.py", tmp_path, NROWS="200", REPS="1",
              QGNN_FORCE_TRITON="1", FWD="[[null, null, null, null, null, null], "
              "[32, 32, 4, 2, 2, null]]", BWD="[[null, null, null, null, null], [32, 32, 4, 2, null]]")
    for part in ("forward", "backward"):
        assert len(res[part]) == 2
        assert_small(row["rel_diff"] for row in res[part].values())
