"""Train-epoch time of the W4A4 GCN at ogbn-arxiv size with ``FakeQuantize.code_grid``
reusing the grid the fused kernel wrote (the library) against forming it again with torch
ops (the previous behaviour, patched in here). Runs alternate A B A B ... so drift hits both.

    python benchmarks/experiments/code_grid_reuse.py ROOT OUT [ROUNDS]

ROOT holds the synthetic ogbn_arxiv dataset (benchmarks/arxiv_epoch_common.sh writes one).
"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
import bench_train_epoch  # noqa: E402
from qgnn.quant.quantizers import FakeQuantize  # noqa: E402

reuse = FakeQuantize.code_grid


def form_again(self, y):
    self._last_grid = None
    return reuse(self, y)


def main():
    root, out = sys.argv[1], Path(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    out.mkdir(parents=True, exist_ok=True)
    times = {"reuse": [], "form_again": []}
    evals = {"reuse": [], "form_again": []}
    for i in range(rounds):
        for mode in ("form_again", "reuse"):
            FakeQuantize.code_grid = reuse if mode == "reuse" else form_again
            path = out / f"code_grid_{mode}_{i}.json"
            bench_train_epoch.main([
                "--config", "configs/ogbn_arxiv_gcn_fp32.yaml", "--device", "cuda", "--data-root", root,
                "--set", "data.name=ogbn_arxiv", "--set", "quant.method=qat", "--set", "quant.weight_bits=4",
                "--set", "quant.act_bits=4", "--epochs", "20", "--out", str(path)])
            r = json.loads(path.read_text())
            times[mode].append(r["seconds_per_epoch"] * 1e3)
            evals[mode].append(r["eval_seconds"] * 1e3)
    for mode in times:
        print(f"{mode:10s} train {statistics.median(times[mode]):7.2f} ms {times[mode]}  "
              f"eval {statistics.median(evals[mode]):6.2f} ms {evals[mode]}")
    (out / "code_grid_reuse.json").write_text(json.dumps({"train_ms": times, "eval_ms": evals}, indent=1))


if __name__ == "__main__":
    main()
