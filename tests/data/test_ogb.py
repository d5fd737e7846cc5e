"""OGB node datasets through ogb's loaders, on small synthetic data in OGB's raw layout."""

import gzip
import json
import shutil
import stat

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ogb")

from qgnn.data import load_dataset  # noqa: E402
from qgnn.data import ogb as qogb  # noqa: E402
from qgnn.data.__main__ import main as cli  # noqa: E402
from qgnn.errors import DataError  # noqa: E402

N, E, F, C = 300, 900, 8, 5
OFFICIAL_CLASSES = {"ogbn_arxiv": 40, "ogbn_products": 47, "ogbn_mag": 349}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Files are present, so neither ogb nor qgnn may try to download anything."""
    import urllib.request

    import ogb.utils.url

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted although the files exist")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(ogb.utils.url, "decide_download", refuse)


def _symmetric(graph):
    src, dst = graph.edges()
    pairs = set(zip(src.tolist(), dst.tolist()))
    return all((b, a) in pairs for a, b in pairs)


@pytest.mark.parametrize("name", ["ogbn_arxiv", "ogbn_products", "ogbn_mag"])
def test_synthetic_statistics_as_written(tmp_path, name):
    folder = qogb.write_synthetic_ogb(tmp_path, name, N, E, F, C, seed=3)
    ds = load_dataset(name, str(tmp_path), download=False)
    stats = ds.statistics()
    assert stats["nodes"] == N
    # arxiv/mag are symmetrised; products gets ogb's inverse edges: both give 2E here.
    assert stats["edges"] == 2 * E
    assert stats["features"] == F
    assert stats["classes"] == OFFICIAL_CLASSES[name]
    assert (stats["train_nodes"], stats["val_nodes"], stats["test_nodes"]) == (180, 60, 60)
    assert _symmetric(ds.graph)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    # row-major: pandas hands the CSV back column-major, which sent every first-layer input
    # quantizer of a model down the slow non-contiguous path
    assert ds.x.is_contiguous()
    label_file = "raw/node-label/paper/node-label.csv.gz" if name == "ogbn_mag" else "raw/node-label.csv.gz"
    written = pd.read_csv(folder / label_file, header=None).values.reshape(-1)
    assert ds.y.tolist() == written.tolist() and int(ds.y.max()) < C
    splits = torch.cat(list(ds.splits.values()))
    assert sorted(splits.tolist()) == list(range(N))
    # Second read goes through ogb's processed cache (torch.load of its own file).
    assert (folder / "processed" / "data_processed").exists()
    again = load_dataset(name, str(tmp_path), download=False)
    assert torch.equal(again.graph.indices, ds.graph.indices) and torch.equal(again.x, ds.x)


def test_directed_edges_kept_when_asked(tmp_path):
    qogb.write_synthetic_ogb(tmp_path, "ogbn-arxiv", N, E, F, C)
    ds = qogb.load_ogb("ogbn-arxiv", str(tmp_path), symmetrize=False, download=False)
    assert ds.graph.num_edges == E and not _symmetric(ds.graph)


def test_read_only_root_reads_in_memory(tmp_path):
    qogb.write_synthetic_ogb(tmp_path / "rw", "ogbn_arxiv", N, E, F, C)
    shutil.copytree(tmp_path / "rw", tmp_path / "ro")
    reference = qogb.load_ogb("ogbn_arxiv", str(tmp_path / "rw"), download=False)
    folders = [p for p in (tmp_path / "ro").rglob("*") if p.is_dir()] + [tmp_path / "ro"]
    for p in folders:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        ds = qogb.load_ogb("ogbn_arxiv", str(tmp_path / "ro"), download=False)
        assert not (tmp_path / "ro" / "ogbn_arxiv" / "processed").exists()
    finally:
        for p in folders:
            p.chmod(0o755)
    assert torch.equal(ds.graph.indptr, reference.graph.indptr)
    assert torch.equal(ds.graph.indices, reference.graph.indices)
    assert all(torch.equal(ds.splits[k], reference.splits[k]) for k in ds.splits)


def test_evaluator_accuracy(tmp_path):
    y_true = torch.tensor([0, 1, 2, 3])
    y_pred = torch.tensor([0, 1, 0, 3])
    assert qogb.evaluate("ogbn_arxiv", y_true, y_pred) == pytest.approx(0.75)


def test_stats_command(tmp_path, capsys):
    qogb.write_synthetic_ogb(tmp_path, "ogbn_products", N, E, F, C)
    assert cli(["stats", "ogbn-products", "--data-root", str(tmp_path), "--json", "--no-download"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == N and out["edges"] == 2 * E and out["classes"] == 47


def test_stats_command_errors(tmp_path, capsys):
    assert cli(["stats", "no_such_set", "--data-root", str(tmp_path)]) == 2
    assert "Unknown dataset 'no_such_set'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- errors
def test_missing_file_lists_expected_paths(tmp_path):
    folder = qogb.write_synthetic_ogb(tmp_path, "ogbn_arxiv", N, E, F, C)
    (folder / "raw" / "node-feat.csv.gz").unlink()
    (folder / "split" / "time" / "valid.csv.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("ogbn_arxiv", str(tmp_path), download=False)
    message = str(info.value)
    assert str(folder / "raw" / "node-feat.csv.gz") in message
    assert str(folder / "split" / "time" / "valid.csv.gz") in message
    assert "arxiv.zip" in message


def test_missing_release_file_does_not_prompt(tmp_path):
    folder = qogb.write_synthetic_ogb(tmp_path, "ogbn_mag", N, E, F, C)
    (folder / "RELEASE_v2.txt").unlink()
    with pytest.raises(DataError, match="no RELEASE_v2.txt"):
        load_dataset("ogbn_mag", str(tmp_path), download=False)


def test_wrong_edge_column_count(tmp_path):
    folder = qogb.write_synthetic_ogb(tmp_path, "ogbn_arxiv", N, E, F, C)
    with gzip.open(folder / "raw" / "edge.csv.gz", "wt") as f:
        f.write("0,1,2\n1,2,0\n")
    with pytest.raises(DataError, match="2 columns"):
        load_dataset("ogbn_arxiv", str(tmp_path), download=False)


def test_label_out_of_range(tmp_path):
    folder = qogb.write_synthetic_ogb(tmp_path, "ogbn_arxiv", N, E, F, C)
    labels = np.full(N, 40)
    with gzip.open(folder / "raw" / "node-label.csv.gz", "wt") as f:
        np.savetxt(f, labels, fmt="%d")
    with pytest.raises(DataError, match=r"labels must lie in \[0, 40\)"):
        load_dataset("ogbn_arxiv", str(tmp_path), download=False)


def test_unknown_ogb_name():
    with pytest.raises(DataError, match="unknown OGB dataset"):
        qogb.load_ogb("ogbn_proteins")
