"""Sweeps: every (config, seed) runs once, the table is the mean and std of what was written."""

import json
import statistics

import pytest

from qgnn.engine.sweep import finished_runs, load_sweep, markdown, run_sweep, runs_csv, summarise
from qgnn.errors import ConfigError

CORA = [f"Cora/raw/ind.cora.{p}" for p in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")]


def test_smoke_sweep_summarises_the_runs(require_files, tmp_path):
    root = str(require_files(*CORA))
    sweep = load_sweep("configs/sweeps/smoke.yaml")
    assert sweep.seeds == [0, 1]
    results = run_sweep(sweep, tmp_path, jobs=1, data_root=root)
    tests = [json.loads((tmp_path / "cora_gcn_fp32" / f"seed_{s}" / "metrics.json").read_text())["test_metric"]
             for s in (0, 1)]
    (row,) = summarise(results)
    assert row["seeds"] == 2
    assert row["test_mean"] == pytest.approx(statistics.fmean(tests))
    assert row["test_std"] == pytest.approx(statistics.stdev(tests))
    assert "cora_gcn_fp32" in markdown([row])
    lines = runs_csv(sweep.name, results).splitlines()
    assert [l.split(",")[2:4] for l in lines[1:]] == [["seed_0", str(round(tests[0], 2))],
                                                      ["seed_1", str(round(tests[1], 2))]]
    # Finished runs are not repeated: their metrics files stay as they were.
    stamp = (tmp_path / "cora_gcn_fp32/seed_0/metrics.json").stat().st_mtime_ns
    run_sweep(sweep, tmp_path, jobs=1, data_root=root)
    assert (tmp_path / "cora_gcn_fp32/seed_0/metrics.json").stat().st_mtime_ns == stamp
    # A report of a partly finished sweep counts only the finished seeds.
    (tmp_path / "cora_gcn_fp32/seed_1/metrics.json").unlink()
    (partial,) = summarise(finished_runs(sweep, tmp_path))
    assert partial["seeds"] == 1 and partial["test_mean"] == pytest.approx(tests[0])


def test_bad_sweep_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 3\nconfigs: []\n")
    with pytest.raises(ConfigError, match="unknown sweep key 'seed'"):
        load_sweep(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("configs:\n  - {config: configs/cora_gcn_fp32.yaml, set: [model.hiden=3]}\n")
    with pytest.raises(ConfigError, match="model.hiden"):
        load_sweep(str(typo))


def test_match_keeps_the_entries_whose_label_contains_it():
    sweep = load_sweep("configs/sweeps/qat_planetoid_w8a8.yaml", match="_a2q")
    labels = [label for label, _, _ in sweep.entries]
    assert labels == [f"{ds}_{arch}_a2q" for ds in ("cora", "citeseer") for arch in ("gcn", "gin", "gat")]
    with pytest.raises(ConfigError, match="no entry of sweep .* containing 'nothing'"):
        load_sweep("configs/sweeps/qat_planetoid_w8a8.yaml", match="nothing")


@pytest.mark.parametrize("path", sorted(str(p) for p in (
    __import__("pathlib").Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml")))
def test_every_shipped_sweep_validates(path):
    """Each entry's config and overrides pass the schema (load_sweep validates them)."""
    sweep = load_sweep(path)
    assert sweep.entries and sweep.seeds


def test_runs_csv_has_one_line_per_run_in_label_and_seed_order():
    def run(label, seed, test):
        return {"label": label, "seed": seed, "test_metric": test, "val_metric": test - 1.0,
                "avg_bits": 4.123456, "seconds_per_epoch": 0.012345, "best_epoch": 7, "device": "cpu"}

    text = runs_csv("grid", [run("b", 1, 70.456), run("a", 0, 80.0), run("b", 0, 71.0)])
    lines = text.splitlines()
    assert lines[0] == "sweep,label,seed,test,val,avg_bits,seconds_per_epoch,best_epoch,device"
    assert lines[1:] == ["grid,a,seed_0,80.0,79.0,4.1235,0.0123,7,cpu",
                         "grid,b,seed_0,71.0,70.0,4.1235,0.0123,7,cpu",
                         "grid,b,seed_1,70.46,69.46,4.1235,0.0123,7,cpu"]
    fp32 = dict(run("c", 0, 50.0), avg_bits=None)  # float32 runs report no bits
    assert runs_csv("grid", [fp32]).splitlines()[1] == "grid,c,seed_0,50.0,49.0,0.0,0.0123,7,cpu"
