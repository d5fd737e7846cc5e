"""REDDIT-BINARY: GIN text format (real zip and small synthetic files), TU format, errors."""

import stat
import zipfile

import pytest
import torch

from qgnn.data import load_dataset
from qgnn.data import reddit
from qgnn.errors import DataError

ZIP = "REDDIT-BINARY/raw/REDDIT-BINARY.zip"

# Three small graphs; node lines are "tag m neighbours" (0-based, both directions listed,
# one neighbour listed twice to check de-duplication). Labels 0/2 as in the real file.
GIN_TEXT = """3
3 0
0 2 1 2
0 1 0
0 2 0 0
2 2
0 1 1
0 1 0
4 2
0 1 1
0 2 0 2
0 2 1 3
0 1 2
"""
# The same graphs as undirected edge sets (local ids) and node counts.
EXPECTED = [({(0, 1), (0, 2)}, 3), ({(0, 1)}, 2), ({(0, 1), (1, 2), (2, 3)}, 4)]


def _undirected_edges(graph):
    src, dst = graph.edges()
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((b, a) in pairs for a, b in pairs), "every edge must be stored in both directions"
    return {(min(a, b), max(a, b)) for a, b in pairs}


def _write_gin_zip(root, text=GIN_TEXT):
    folder = root / "REDDIT-BINARY" / "raw"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "REDDIT-BINARY.zip", "w") as zf:
        zf.writestr("REDDIT-BINARY/REDDIT-BINARY.txt", text)
        for k in range(1, 11):
            zf.writestr(f"REDDIT-BINARY/10fold_idx/train_idx-{k}.txt", "0\n1\n")
            zf.writestr(f"REDDIT-BINARY/10fold_idx/test_idx-{k}.txt", "2\n")
    return folder / "REDDIT-BINARY.zip"


def _tu_files():
    """EXPECTED in TU format: 1-based global ids, both directions, labels -1/1."""
    a_lines, indicator, offset = [], [], 0
    for g, (edges, n) in enumerate(EXPECTED):
        for i, j in sorted(edges):
            a_lines += [f"{i + offset + 1}, {j + offset + 1}", f"{j + offset + 1}, {i + offset + 1}"]
        indicator += [str(g + 1)] * n
        offset += n
    return {
        "REDDIT-BINARY_A.txt": "\n".join(a_lines) + "\n",
        "REDDIT-BINARY_graph_indicator.txt": "\n".join(indicator) + "\n",
        "REDDIT-BINARY_graph_labels.txt": "-1\n1\n1\n",
    }


def _check_small(ds):
    assert len(ds) == 3
    assert ds.labels.tolist() == [0, 1, 1]
    for sample, (edges, n) in zip(ds.samples, EXPECTED):
        assert sample.graph.num_nodes == n
        assert _undirected_edges(sample.graph) == edges
        assert sample.graph.num_edges == 2 * len(edges)


# ---------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real(data_root):
    from tests.conftest import need_files

    need_files(data_root, ZIP)
    return reddit.load_reddit_binary(root=str(data_root), download=False)


def test_published_statistics(real):
    stats = real.statistics()
    assert stats["graphs"] == 2000
    assert stats["class_counts"] == [1000, 1000]
    assert round(stats["avg_nodes"], 1) == 429.6
    # Published edge counts are undirected; the Graph stores both directions.
    assert round(stats["avg_edges"] / 2, 1) == 497.8
    assert real.num_classes == 2 and real.task == "graph-cls"


def test_real_graphs_are_simple_and_symmetric(real):
    for sample in real.samples[:50]:
        src, dst = sample.graph.edges()
        assert not (src == dst).any()
        _undirected_edges(sample.graph)
        assert torch.equal(sample.x, sample.graph.in_degrees())


def test_shipped_folds_partition_the_graphs(data_root, real):
    folds = reddit.shipped_folds(str(data_root))
    assert len(folds) == 10
    tests = torch.cat([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(2000))
    for train, test in folds:
        assert len(set(train.tolist()) & set(test.tolist())) == 0
        assert train.numel() + test.numel() == 2000


def test_stratified_fold_option(data_root, real):
    ds = reddit.load_reddit_binary(root=str(data_root), download=False, fold=3, features="constant")
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.numel() + test.numel() == 2000
    assert ds.labels[test].sum().item() == test.numel() // 2  # stratified: balanced
    assert ds[0].x.shape == (ds[0].graph.num_nodes, 1)


# ---------------------------------------------------------------------------- synthetic files
def test_gin_zip_small(tmp_path):
    _write_gin_zip(tmp_path)
    ds = reddit.load_reddit_binary(root=str(tmp_path), download=False)
    _check_small(ds)
    assert ds[0].x.tolist() == [2, 1, 1]  # degree features
    assert ds.num_node_types == 3
    capped = reddit.load_reddit_binary(root=str(tmp_path), download=False, max_degree=1)
    assert capped[0].x.tolist() == [1, 1, 1] and capped.num_node_types == 2
    tags = reddit.load_reddit_binary(root=str(tmp_path), download=False, features="tag")
    assert tags[0].x.tolist() == [0, 0, 0]


def test_registry_name_and_shipped_fold(tmp_path):
    _write_gin_zip(tmp_path)
    ds = load_dataset("REDDIT-BINARY", str(tmp_path), download=False, fold=0, folds="shipped")
    assert ds.splits["train"].tolist() == [0, 1] and ds.splits["test"].tolist() == [2]


def test_tu_format_loose_and_zipped(tmp_path):
    loose = tmp_path / "loose" / "REDDIT-BINARY" / "raw"
    loose.mkdir(parents=True)
    for name, text in _tu_files().items():
        (loose / name).write_text(text)
    _check_small(reddit.load_reddit_binary(root=str(tmp_path / "loose"), download=False))

    zipped = tmp_path / "zipped" / "REDDIT-BINARY" / "raw"
    zipped.mkdir(parents=True)
    with zipfile.ZipFile(zipped / "REDDIT-BINARY.zip", "w") as zf:
        for name, text in _tu_files().items():
            zf.writestr(f"REDDIT-BINARY/{name}", text)
    _check_small(reddit.load_reddit_binary(root=str(tmp_path / "zipped"), download=False))


def test_cache_written_only_where_writable(tmp_path):
    _write_gin_zip(tmp_path / "rw")
    reddit.load_reddit_binary(root=str(tmp_path / "rw"), download=False)
    assert (tmp_path / "rw" / "REDDIT-BINARY" / "processed" / "reddit_binary.pt").exists()
    again = reddit.load_reddit_binary(root=str(tmp_path / "rw"), download=False)
    _check_small(again)

    _write_gin_zip(tmp_path / "ro")
    folder = tmp_path / "ro" / "REDDIT-BINARY"
    for p in (folder / "raw", folder):
        p.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        _check_small(reddit.load_reddit_binary(root=str(tmp_path / "ro"), download=False))
        assert not (folder / "processed").exists()
    finally:
        for p in (folder, folder / "raw"):
            p.chmod(0o755)


# ---------------------------------------------------------------------------- errors
def test_truncated_zip(tmp_path):
    path = _write_gin_zip(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        reddit.load_reddit_binary(root=str(tmp_path), download=False, cache=False)


def test_truncated_text():
    text = "\n".join(GIN_TEXT.splitlines()[:-2]) + "\n"
    with pytest.raises(DataError, match="unexpected end of file"):
        reddit.parse_gin_text(text)


def test_bad_neighbour_and_count():
    with pytest.raises(DataError, match="names neighbour 5"):
        reddit.parse_gin_text("1\n2 0\n0 1 5\n0 1 0\n")
    with pytest.raises(DataError, match="announces 3 neighbours but lists 1"):
        reddit.parse_gin_text("1\n2 0\n0 3 1\n0 1 0\n")
    with pytest.raises(DataError, match="line 2"):
        reddit.parse_gin_text("1\nx 0\n")


def test_tu_wrong_column_count(tmp_path):
    files = _tu_files()
    files["REDDIT-BINARY_A.txt"] = "1, 2, 7\n2, 1, 7\n"
    with pytest.raises(DataError, match="3 column"):
        reddit.parse_tu(*(files[f"REDDIT-BINARY{s}"].encode() for s in reddit.TU_SUFFIXES))


def test_missing_files_lists_expected_paths(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("reddit_binary", str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path / "REDDIT-BINARY" / "raw" / "REDDIT-BINARY.zip") in message
    assert "REDDIT-BINARY_graph_indicator.txt" in message


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="Unknown dataset 'reddit_trinary'.*reddit_binary"):
        load_dataset("reddit_trinary")


def test_bad_options(tmp_path):
    _write_gin_zip(tmp_path)
    with pytest.raises(DataError, match="features must be"):
        reddit.load_reddit_binary(root=str(tmp_path), download=False, features="onehot")
    with pytest.raises(DataError, match="fold must be in"):
        reddit.load_reddit_binary(root=str(tmp_path), download=False, fold=10)
