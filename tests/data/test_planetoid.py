"""Planetoid reader: real files, published statistics, and clear errors for bad files."""

import shutil

import pytest
import torch

from qgnn.data import load_dataset
from qgnn.errors import DataError

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def files(name, folder):
    return [f"{folder}/raw/ind.{name}.{p}" for p in PARTS]


@pytest.mark.parametrize(
    "name,folder,nodes,edges,features,classes",
    [("cora", "Cora", 2708, 10556, 1433, 7), ("citeseer", "CiteSeer", 3327, 9104, 3703, 6)],
)
def test_published_statistics(require_files, name, folder, nodes, edges, features, classes):
    root = require_files(*files(name, folder))
    data = load_dataset(name, str(root), download=False)
    assert (data.graph.num_nodes, data.graph.num_edges) == (nodes, edges)
    assert data.x.shape == (nodes, features) and data.num_classes == classes
    assert torch.bincount(data.y[data.splits["train"]]).tolist() == [20] * classes
    assert [data.splits[s].numel() for s in ("train", "val", "test")] == [20 * classes, 500, 1000]
    all_ids = torch.cat(list(data.splits.values()))
    assert all_ids.unique().numel() == all_ids.numel()  # splits are disjoint
    torch.testing.assert_close(data.x.sum(1)[data.x.sum(1) > 0], torch.ones(int((data.x.sum(1) > 0).sum())))
    src, dst = data.graph.edges()
    assert not (src == dst).any()
    # Undirected: every edge has its reverse.
    key = lambda s, d: set(zip(s.tolist(), d.tolist()))  # noqa: E731
    assert key(src, dst) == key(dst, src)


def test_cora_label_distribution(require_files):
    root = require_files(*files("cora", "Cora"))
    data = load_dataset("cora", str(root), download=False)
    # Class sizes of Cora as published (e.g. PyG's Planetoid): 351, 217, 418, 818, 426, 298, 180.
    assert torch.bincount(data.y).tolist() == [351, 217, 418, 818, 426, 298, 180]


def test_pubmed_missing_allx_is_named(require_files):
    root = require_files(*[f for f in files("pubmed", "PubMed") if not f.endswith("allx")])
    if (root / "PubMed/raw/ind.pubmed.allx").exists():
        pytest.skip("this data root has ind.pubmed.allx")
    with pytest.raises(DataError) as info:
        load_dataset("pubmed", str(root), download=False)
    message = str(info.value)
    assert "ind.pubmed.allx" in message and "missing 1 raw file" in message
    assert "ind.pubmed.x\n" not in message


def test_missing_dataset_lists_every_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cora", str(tmp_path), download=False)
    for part in PARTS:
        assert f"ind.cora.{part}" in str(info.value)
    assert str(tmp_path / "Cora" / "raw") in str(info.value)


def test_corrupt_file_fails_checksum(require_files, tmp_path):
    root = require_files(*files("cora", "Cora"))
    shutil.copytree(root / "Cora", tmp_path / "Cora")
    target = tmp_path / "Cora/raw/ind.cora.tx"
    target.write_bytes(target.read_bytes()[:1000])  # truncated
    with pytest.raises(DataError, match=r"ind\.cora\.tx is corrupt.*sha256"):
        load_dataset("cora", str(tmp_path), download=False)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="Unknown dataset 'coraa'. Known datasets: .*cora"):
        load_dataset("coraa")
