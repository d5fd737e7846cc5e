"""MNIST / CIFAR10 superpixels: small files in the exact published formats, and raw images."""

import gzip
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import torch

from qgnn.data import load_dataset
from qgnn.data import superpixels as sp
from qgnn.errors import DataError


def _records(rng, sizes, channels):
    """``extract_superpixels.py`` records: (mean_px (n, C) float32, coord (n, 2) float32, order)."""
    out = []
    for n in sizes:
        mean_px = rng.random((n, channels)).astype(np.float32)
        coord = (rng.random((n, 2)) * 27).astype(np.float32)
        out.append((mean_px, coord, rng.permutation(n).astype(np.int32)))
    return out


def _write_knyazev(folder, name, n_train_sizes, n_test_sizes, channels, seed=0):
    """Exactly as extract_superpixels.py: pickle.dump((labels int32, sp_data), protocol=2)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, sizes in (("train", n_train_sizes), ("test", n_test_sizes)):
        labels = rng.integers(0, 10, len(sizes)).astype(np.int32)
        records = _records(rng, sizes, channels)
        with open(folder / sp.superpixel_file(name, split), "wb") as f:
            pickle.dump((labels, records), f, protocol=2)
        data[split] = (labels, records)
    return data


def _reference_edges(coord, feat, use_feat):
    """benchmarking-gnns data/superpixels.py, restated: returns {(src, dst): weight}."""
    from scipy.spatial.distance import cdist

    def sigma(d, kth=8):
        try:
            knns = np.partition(d, kth, axis=-1)[:, kth::-1]
            s = knns.sum(axis=1).reshape((knns.shape[0], 1)) / kth
        except ValueError:
            s = np.array([1] * d.shape[0]).reshape(d.shape[0], 1)
        return s + 1e-8

    c = cdist(coord, coord)
    if use_feat:
        f = cdist(feat, feat)
        a = np.exp(-(c / sigma(c)) ** 2 - (f / sigma(f)) ** 2)
    else:
        a = np.exp(-(c / sigma(c)) ** 2)
    a = 0.5 * (a + a.T)
    a[np.diag_indices_from(a)] = 0
    n = a.shape[0]
    if n > 9:
        knns = np.argpartition(a, n - 9 - 1, axis=-1)[:, n - 9 : -1]
    else:
        knns = np.tile(np.arange(n), n).reshape(n, n)
        if n != 1:
            knns = knns[knns != np.arange(n)[:, None]].reshape(n, -1)
    edges = {}
    for s, dsts in enumerate(knns):
        for d in (dsts if n == 1 else dsts[dsts != s]):
            edges[(s, int(d))] = a[s, d]
    return edges


def _edges(sample):
    src, dst = sample.graph.edges()
    return {(s, d): w for s, d, w in zip(src.tolist(), dst.tolist(), sample.edge_attr.tolist())}


@pytest.mark.parametrize("use_colour", [False, True])
def test_mnist_pickles_match_the_benchmark_graphs(tmp_path, use_colour):
    data = _write_knyazev(tmp_path / "MNIST" / "raw", "mnist", [75, 12, 9, 5, 1, 40], [30, 75], 1)
    ds = load_dataset("mnist", str(tmp_path), num_val=2, use_colour=use_colour)
    assert ds.name == "MNIST" and ds.num_classes == 10 and len(ds) == 8
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": [2, 3, 4, 5], "val": [0, 1], "test": [6, 7]}
    records = data["train"][1] + data["test"][1]
    labels = np.concatenate([data["train"][0], data["test"][0]])
    for sample, (mean_px, coord, _), label in zip(ds.samples, records, labels):
        n = len(coord)
        assert sample.graph.num_nodes == n
        assert sample.x.shape == (n, 3) and sample.x.dtype == torch.float32
        np.testing.assert_allclose(sample.x[:, :1].numpy(), mean_px)
        np.testing.assert_allclose(sample.x[:, 1:].numpy(), coord / 28, rtol=1e-6)
        assert sample.y.item() == label
        ref = _reference_edges(coord / 28, mean_px, use_colour)
        got = _edges(sample)
        assert got.keys() == ref.keys()
        for key in ref:
            assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7)
        out_degree = torch.bincount(sample.graph.edges()[0], minlength=n)
        assert out_degree.tolist() == [8 if n > 9 else max(n - 1, 1)] * n


def test_cifar10_pickles(tmp_path):
    _write_knyazev(tmp_path / "CIFAR10" / "raw", "cifar10", [150, 100, 20], [140], 3)
    ds = load_dataset("cifar10", str(tmp_path), num_val=1)
    assert ds[0].x.shape == (150, 5)
    assert ds.statistics()["graphs"] == 4
    assert ds[0].graph.num_edges == 150 * 8


def test_mnist_from_raw_images_with_cache(tmp_path):
    pytest.importorskip("skimage")
    rng = np.random.default_rng(1)
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    for img in images:  # a few bright blobs, like digits on black
        for _ in range(3):
            r, c = rng.integers(4, 24, 2)
            img[r - 3 : r + 3, c - 2 : c + 2] = 255
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)

    def idx(path, arr):
        header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        path.write_bytes(gzip.compress(header + arr.tobytes()))

    for prefix in ("train", "t10k"):
        idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    ds = sp.load_superpixels("mnist", str(tmp_path), num_val=1)
    assert len(ds) == 8 and ds.labels.tolist() == [3, 1, 4, 1] * 2
    for sample in ds.samples:
        n = sample.graph.num_nodes
        assert 1 <= n <= 75 and sample.x.shape == (n, 3)
        assert 0 <= sample.x.min() and sample.x.max() <= 1
    # The superpixels are cached in the pickle format and reused.
    cached = tmp_path / "MNIST" / "processed" / "mnist_75sp_train.pkl"
    assert cached.exists()
    labels_c, records = sp.read_superpixel_pickle(cached)
    assert labels_c.tolist() == [3, 1, 4, 1] and len(records) == 4
    again = sp.load_superpixels("mnist", str(tmp_path), num_val=1)
    for a, b in zip(ds.samples, again.samples):
        assert torch.equal(a.x, b.x) and torch.equal(a.graph.indices, b.graph.indices)


def test_cifar10_from_raw_batches(tmp_path):
    pytest.importorskip("skimage")
    rng = np.random.default_rng(2)
    base = tmp_path / "CIFAR10" / "raw" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (1, 3072), dtype=np.uint8), b"labels": [7]}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    ds = sp.load_superpixels("cifar10", str(tmp_path), num_val=1)
    assert len(ds) == 6 and ds[0].x.shape[1] == 5
    assert all(s.graph.num_nodes <= 150 for s in ds.samples)


def test_benchmark_dgl_pickle(tmp_path, monkeypatch):
    """MNIST.pkl: [train, val, test] of benchmarking-gnns' DGLFormDataset of DGLGraphs."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    dgl = pytest.importorskip("dgl")
    module = types.ModuleType("data.superpixels")

    class DGLFormDataset:
        def __init__(self, *lists):
            self.lists = lists
            self.graph_lists = lists[0]
            self.graph_labels = lists[1]

    DGLFormDataset.__module__ = "data.superpixels"
    DGLFormDataset.__qualname__ = "DGLFormDataset"
    module.DGLFormDataset = DGLFormDataset
    monkeypatch.setitem(sys.modules, "data", types.ModuleType("data"))
    monkeypatch.setitem(sys.modules, "data.superpixels", module)

    def graph(n, seed):
        g = dgl.graph((torch.tensor([1, 2, 0]), torch.tensor([0, 0, 1])), num_nodes=n)
        g.ndata["feat"] = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)).half()
        g.edata["feat"] = torch.tensor([[0.5], [0.25], [0.125]]).half()
        return g

    parts = [DGLFormDataset([graph(3, 0), graph(4, 1)], torch.tensor([1, 2])),
             DGLFormDataset([graph(3, 2)], torch.tensor([3])),
             DGLFormDataset([graph(5, 3)], torch.tensor([4]))]
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    with open(folder / "MNIST.pkl", "wb") as f:
        pickle.dump(parts, f)
    monkeypatch.delitem(sys.modules, "data.superpixels")  # the reader must not need it

    ds = sp.load_superpixels("mnist", str(tmp_path))
    assert ds.labels.tolist() == [1, 2, 3, 4]
    assert {k: v.tolist() for k, v in ds.splits.items()} == {"train": [0, 1], "val": [2], "test": [3]}
    first = ds[0]
    assert first.x.dtype == torch.float32 and first.x.shape == (3, 3)
    assert _edges(first) == {(1, 0): 0.5, (2, 0): 0.25, (0, 1): 0.125}


# ---------------------------------------------------------------------------- errors
def test_truncated_pickle(tmp_path):
    _write_knyazev(tmp_path / "MNIST" / "raw", "mnist", [20, 20], [20], 1)
    path = tmp_path / "MNIST" / "raw" / "mnist_75sp_train.pkl"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a superpixel pickle"):
        sp.load_superpixels("mnist", str(tmp_path))


def test_label_count_mismatch(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    records = _records(np.random.default_rng(0), [12, 12], 1)
    for split in ("train", "test"):
        with open(folder / sp.superpixel_file("mnist", split), "wb") as f:
            pickle.dump((np.zeros(3, np.int32), records), f, protocol=2)
    with pytest.raises(DataError, match="3 labels for 2 superpixel records"):
        sp.load_superpixels("mnist", str(tmp_path))


def test_truncated_idx(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    header = struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 10, 28, 28)
    (folder / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 100)
    (folder / "train-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 10) + b"\0" * 10)
    with pytest.raises(DataError, match="not a readable IDX file"):
        sp.load_superpixels("mnist", str(tmp_path))


def test_missing_files_lists_expected_paths(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", str(tmp_path))
    message = str(info.value)
    raw = tmp_path / "CIFAR10" / "raw"
    for path in (raw / "cifar10_150sp_train.pkl", raw / "CIFAR10.pkl", raw / "cifar-10-batches-py" / "test_batch"):
        assert str(path) in message
