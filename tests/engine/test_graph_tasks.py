"""Graph tasks end to end: mini-batch classification with k-fold CV, ZINC regression on the
real files, eval.py reproducing the metric, fixed-seed determinism, the fold split, OGB node
classification on a synthetic dataset (with and without the ogb package) and the epoch
benchmark."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qgnn.data import GraphDataset, GraphSample, load_dataset, register
from qgnn.data.ogb import evaluate as ogb_evaluate
from qgnn.data.ogb import load_ogb, write_synthetic_ogb
from qgnn.engine import evaluate_checkpoint, fit, load_checkpoint, load_config
from qgnn.engine.cv import fold_splits
from qgnn.errors import ConfigError
from qgnn.graph import Graph

REPO = Path(__file__).resolve().parents[2]
ZINC = ["ZINC/raw/smiles_score.csv", "ZINC/raw/indexes_train_val_test.csv"]
REDDIT = ["REDDIT-BINARY/raw/REDDIT-BINARY.zip"]


# ---------------------------------------------------------------------------- test datasets
def _ring_or_star(n: int, star: bool) -> Graph:
    if star:
        src = torch.zeros(n - 1, dtype=torch.long)
        dst = torch.arange(1, n)
    else:
        src = torch.arange(n)
        dst = (src + 1) % n
    return Graph.from_edges(torch.cat([src, dst]), torch.cat([dst, src]), n)


@register("test_rings_stars")
def _rings_stars(name, root=None):
    """45 rings (class 0) and 30 stars (class 1), 5-12 nodes, degree as the node label; no split."""
    rng = np.random.default_rng(0)
    samples = []
    for k in range(75):
        star = k % 5 in (1, 3)
        g = _ring_or_star(int(rng.integers(5, 13)), star)
        samples.append(GraphSample(g, g.in_degrees().clamp(max=15), torch.tensor(int(star))))
    return GraphDataset("rings-stars", samples, "graph-cls", num_classes=2, num_node_types=16)


@register("test_zinc_small")
def _zinc_small(name, root=None):
    """The real ZINC files, 600 / 150 / 150 molecules of its own train / val / test split."""
    full = load_dataset("zinc", root)
    keep = {"train": 600, "val": 150, "test": 150}
    index = {k: full.splits[k][:n] for k, n in keep.items()}
    order = torch.cat(list(index.values()))
    samples = [full.samples[int(i)] for i in order]
    starts = np.cumsum([0] + list(keep.values()))
    splits = {k: torch.arange(starts[j], starts[j + 1]) for j, k in enumerate(keep)}
    return GraphDataset("ZINC-small", samples, "graph-reg", num_node_types=full.num_node_types,
                        num_edge_types=full.num_edge_types, splits=splits)


def cls_config(*extra):
    return load_config(None, [
        "data.name=test_rings_stars", "data.folds=3", "model.arch=gin", "model.num_layers=2",
        "model.hidden=16", "model.dropout=0.0", "model.batch_norm=true", "train.epochs=4",
        "train.batch_size=16", "train.lr=0.01", "train.weight_decay=0.0", "train.checkpoint_every=2",
        *extra,
    ])


# ---------------------------------------------------------------------------- classification + CV
def test_cv_runs_every_fold_and_eval_reproduces_each(tmp_path):
    metrics = fit(cls_config(), tmp_path, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["metric"] == "accuracy" and metrics["folds"] == 3
    per_fold = metrics["per_fold"]
    assert [f["fold"] for f in per_fold] == [0, 1, 2]
    assert metrics["test_metric"] == pytest.approx(np.mean([f["test_metric"] for f in per_fold]))
    assert metrics["test_std"] == pytest.approx(np.std([f["test_metric"] for f in per_fold], ddof=1))
    assert "StratifiedKFold" in metrics["cv_protocol"]
    for k, fold in enumerate(per_fold):
        ckpt = tmp_path / f"fold_{k}" / "best.pt"
        assert load_checkpoint(ckpt)["config"]["data"]["fold"] == k
        again = evaluate_checkpoint(ckpt)
        assert again["test_metric"] == fold["test_metric"]
        assert again["val_metric"] == fold["val_metric"]
    # Rings vs stars by degree labels: trivially separable, so training must learn it.
    assert max(f["val_metric"] for f in per_fold) > 90.0


def test_one_fold_per_run_and_fixed_seed_repeats(tmp_path):
    a = fit(cls_config("data.fold=1"), tmp_path / "a", progress=False)
    b = fit(cls_config("data.fold=1"), tmp_path / "b", progress=False)
    c = fit(cls_config("data.fold=1", "train.seed=1"), tmp_path / "c", progress=False)
    assert "per_fold" not in a and (tmp_path / "a" / "best.pt").is_file()
    assert a["test_metric"] == b["test_metric"] and a["val_metric"] == b["val_metric"]
    sa, sb, sc = (load_checkpoint(tmp_path / r / "last.pt")["model"] for r in "abc")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_of_a_cv_run_keeps_finished_folds_and_repeats_the_rest(tmp_path):
    full = fit(cls_config(), tmp_path / "full", progress=False)
    part = tmp_path / "part"
    fit(cls_config(), part, progress=False)
    (part / "fold_2" / "metrics.json").unlink()  # as if fold 2 was interrupted after last.pt
    stamp = (part / "fold_0" / "best.pt").stat().st_mtime_ns
    resumed = fit(cls_config(), part, resume=True, progress=False)
    assert (part / "fold_0" / "best.pt").stat().st_mtime_ns == stamp  # finished fold kept
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds_per_epoch"} for r in rows]  # noqa: E731
    assert drop(resumed["per_fold"]) == drop(full["per_fold"])


def test_fold_out_of_range_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.fold"):
        fit(cls_config("data.fold=3"), tmp_path, progress=False)


def _check_folds(labels: torch.Tensor, folds: int, seed: int) -> None:
    n = labels.numel()
    tests = []
    for k in range(folds):
        s = fold_splits(labels, folds, k, seed)
        parts = [set(s[p].tolist()) for p in ("train", "val", "test")]
        assert sum(map(len, parts)) == n and set().union(*parts) == set(range(n))  # disjoint, complete
        for part in ("val", "test"):  # each class in proportion (StratifiedKFold: within one)
            counts = torch.bincount(labels[s[part]], minlength=2).float()
            expected = torch.bincount(labels, minlength=2).float() * s[part].numel() / n
            assert (counts - expected).abs().max() <= 1.0
        tests.append(s["test"])
    everything = torch.cat(tests)
    assert everything.numel() == n and everything.unique().numel() == n  # test folds partition the data
    assert not torch.equal(fold_splits(labels, folds, 0, seed)["test"], fold_splits(labels, folds, 0, seed + 1)["test"])


def test_fold_split_is_stratified_and_disjoint():
    labels = torch.tensor([0] * 70 + [1] * 33)[torch.randperm(103, generator=torch.Generator().manual_seed(0))]
    _check_folds(labels, 10, seed=0)


def test_reddit_fold_split_is_stratified_and_disjoint(require_files):
    root = str(require_files(*REDDIT))
    labels = load_dataset("reddit_binary", root).labels
    _check_folds(labels, 10, seed=0)
    assert torch.bincount(labels[fold_splits(labels, 10, 0, 0)["test"]]).tolist() == [100, 100]


# ---------------------------------------------------------------------------- ZINC regression
def test_zinc_regression_learns_and_eval_reproduces(require_files, tmp_path):
    root = str(require_files(*ZINC))
    cfg = load_config(str(REPO / "configs/zinc_gin_fp32.yaml"), [
        "data.name=test_zinc_small", "model.hidden=32", "train.epochs=4", "train.batch_size=64",
    ])
    metrics = fit(cfg, tmp_path, data_root=root, progress=False)
    assert metrics["metric"] == "mae" and metrics["dataset"] == "test_zinc_small"
    again = evaluate_checkpoint(tmp_path / "best.pt", data_root=root)
    assert again["test_metric"] == metrics["test_metric"] and again["val_metric"] == metrics["val_metric"]
    # Better than the best constant predictor (the median of the training targets).
    ds = load_dataset("test_zinc_small", root)
    y = ds.labels.view(-1)
    median = y[ds.splits["train"]].median()
    assert metrics["val_metric"] < float((y[ds.splits["val"]] - median).abs().mean())


def test_data_fold_on_a_fixed_split_is_refused(require_files, tmp_path):
    root = str(require_files(*ZINC))
    cfg = load_config(str(REPO / "configs/zinc_gin_fp32.yaml"), ["data.name=test_zinc_small", "data.fold=0"])
    with pytest.raises(ConfigError, match="fixed train/val/test split"):
        fit(cfg, tmp_path, data_root=root, progress=False)


# ---------------------------------------------------------------------------- configs
NEW_CONFIGS = [
    "reddit_binary_gin_fp32", "reddit_binary_gcn_fp32", "zinc_gin_fp32", "zinc_gcn_fp32",
    "zinc_gat_fp32", "mnist_gcn_fp32", "mnist_gin_fp32", "cifar10_gcn_fp32", "cifar10_gin_fp32",
    "ogbn_arxiv_gcn_fp32", "ogbn_products_gcn_fp32", "ogbn_mag_gcn_fp32",
]


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_configs_validate(name):
    cfg = load_config(str(REPO / "configs" / f"{name}.yaml"))
    assert cfg.name == name and cfg.data.name == name.rsplit("_", 2)[0]


def test_unknown_scheduler_is_refused():
    with pytest.raises(ConfigError, match="train.scheduler"):
        load_config(None, ["train.scheduler=cosine"])


# ---------------------------------------------------------------------------- OGB
def run_cli(*args):
    env = {"PATH": "/usr/bin:/bin", "DGLBACKEND": "pytorch", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_ogbn_arxiv_a2q_trains_end_to_end(tmp_path):
    root = tmp_path / "data"
    write_synthetic_ogb(root, "ogbn_arxiv", num_nodes=300, num_edges=1200, num_features=16, num_classes=5)
    config = REPO / "configs" / "ogbn_arxiv_a2q.yaml"
    args = ["--config", config] if config.exists() else [
        "--config", REPO / "configs" / "ogbn_arxiv_gcn_fp32.yaml", "--set", "quant.method=a2q"]
    out = tmp_path / "run"
    result = run_cli(REPO / "train.py", *args, "--set", "train.epochs=2", "--out", out, "--quiet",
                     "--data-root", root)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "a2q" and metrics["epochs_run"] == 2 and metrics["dataset"] == "ogbn_arxiv"
    result = run_cli(REPO / "eval.py", "--checkpoint", out / "best.pt", "--data-root", root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_metric"] == metrics["test_metric"]


@pytest.mark.parametrize("name", ["ogbn_arxiv", "ogbn_products", "ogbn_mag"])
def test_ogb_reader_without_the_ogb_package_matches(tmp_path, monkeypatch, name):
    pytest.importorskip("ogb")
    write_synthetic_ogb(tmp_path, name, num_nodes=120, num_edges=400, num_features=8, num_classes=6)
    with_ogb = load_ogb(name, tmp_path, download=False)
    for module in [m for m in sys.modules if m == "ogb" or m.startswith("ogb.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "ogb", None)  # import ogb -> ImportError
    without = load_ogb(name, tmp_path, download=False)
    assert without.num_classes == with_ogb.num_classes
    assert torch.equal(without.graph.indptr, with_ogb.graph.indptr)
    assert torch.equal(without.graph.indices, with_ogb.graph.indices)
    assert torch.equal(without.x, with_ogb.x) and torch.equal(without.y, with_ogb.y)
    assert all(torch.equal(without.splits[k], with_ogb.splits[k]) for k in ("train", "val", "test"))
    y, pred = with_ogb.y, torch.roll(with_ogb.y, 1)
    assert ogb_evaluate(name, y, pred) == pytest.approx(float((y == pred).float().mean()))


# ---------------------------------------------------------------------------- benchmark script
def test_bench_train_epoch_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(REPO / "benchmarks" / "bench_train_epoch.py", "--config", REPO / "configs/ogbn_arxiv_gcn_fp32.yaml",
                     "--device", "cpu", "--synthetic-arxiv", "--synthetic-size", "400,1500,16,5",
                     "--epochs", "3", "--warmup", "1", "--threads", "1", "--out", out,
                     "--profile", tmp_path / "profile.txt")
    assert result.returncode == 0, result.stderr
    profile = (tmp_path / "profile.txt").read_text()
    assert "== train epoch" in profile and "== evaluation" in profile and "aten::" in profile
    report = json.loads(out.read_text())
    assert report["epochs_timed"] == 3 and len(report["seconds_per_epoch_all"]) == 3
    assert report["seconds_per_epoch"] == pytest.approx(float(np.median(report["seconds_per_epoch_all"])))
    assert report["dataset"]["nodes"] == 400 and report["dataset"]["edges"] == 3000  # symmetrised
    assert report["peak_memory_bytes"] is None and report["synthetic"]["features"] == 16


@pytest.mark.parametrize("setting,node_kernel,graph_kernel", [
    ("auto", "triton", "torch"), ("triton", "triton", "triton"), ("torch", "torch", "torch")])
def test_agg_kernel_auto_picks_triton_for_node_tasks_only(tmp_path, setting, node_kernel, graph_kernel):
    """``model.agg_kernel=auto``: the Triton CSR kernel where one graph's plan serves every
    epoch (node tasks), torch.sparse where each batch is a new graph (graph tasks)."""
    from qgnn.engine.trainer import build

    write_synthetic_ogb(tmp_path, "ogbn_arxiv", 60, 200, 8, 3, seed=0)
    node_cfg = load_config(None, ["data.name=ogbn_arxiv", f"model.agg_kernel={setting}"])
    _, node_model, _ = build(node_cfg, torch.device("cpu"), str(tmp_path))
    _, graph_model, _ = build(cls_config(f"model.agg_kernel={setting}", "data.fold=0"), torch.device("cpu"), None)
    assert {conv.agg_kernel for conv in node_model.convs} == {node_kernel}
    assert {conv.agg_kernel for conv in graph_model.convs} == {graph_kernel}
    assert {conv.low_bit_gather for conv in node_model.convs} == {True}
