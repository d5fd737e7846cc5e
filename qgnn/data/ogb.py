"""OGB node property prediction: ogbn-arxiv, ogbn-products, ogbn-mag.

Read through the ``ogb`` package's library-agnostic loader
(:class:`ogb.nodeproppred.NodePropPredDataset`) from OGB's own layout under the data root,
the folder the official zip unpacks to, renamed as OGB does (``arxiv/`` -> ``ogbn_arxiv/``)::

    <root>/ogbn_arxiv/RELEASE_v1.txt
    <root>/ogbn_arxiv/raw/{edge,num-node-list,num-edge-list,node-feat,node-label,node_year}.csv.gz
    <root>/ogbn_arxiv/split/time/{train,valid,test}.csv.gz

(products: no ``node_year``, split ``sales_ranking``; mag: the heterogeneous layout with
``raw/relations/<head>___<rel>___<tail>/``, ``raw/node-feat/paper/``,
``raw/node-label/paper/``, ``split/time/paper/`` and ``RELEASE_v2.txt``). Offline behaviour of
``ogb`` 1.3.6, and what this module does about it:

- it downloads only when ``raw/edge.csv.gz`` (hetero: ``raw/triplet-type-list.csv.gz``) is
  absent; this module checks every expected file first and raises a :class:`DataError`
  listing the missing ones, or downloads the official zip itself when ``download=True``;
- a dataset folder without ``RELEASE_v<version>.txt`` makes ``ogb`` ask on stdin whether to
  re-download; this module refuses such a folder with a clear message instead;
- ``ogb`` caches ``processed/data_processed`` with ``torch.save`` and reloads it with a bare
  ``torch.load``, which torch >= 2.6 cannot read (``weights_only`` default); the reload runs
  with torch's documented ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` switch set for that call only.
  When the dataset folder is not writable (a read-only shared data root), or
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set, ``ogb``'s own raw readers are called directly and
  the result stays in memory.
- without the ``ogb`` package installed, the raw CSVs are read directly with pandas
  (:func:`_read_without_ogb`: the same files and the same ``add_inverse_edge`` rule as
  ogb's raw readers, for the three datasets here), and :func:`evaluate` computes the
  accuracy as ogb's ``Evaluator`` does (the mean of ``y_true == y_pred``).

Returned :class:`NodeDataset` (``x`` ``(N, F)`` float32, ``y`` ``(N,)`` int64, splits
train/val/test from OGB's train/valid/test). Edges, as OGB's GCN baselines use them:
arxiv's and mag's directed citations are symmetrised (``adj_t.to_symmetric()`` in
``examples/nodeproppred/{arxiv,mag}/gnn.py``; duplicates dropped); products ships both
directions already (``add_inverse_edge``) and is used as given. ogbn-mag keeps only the
paper nodes, their 128-d features and the paper-cites-paper edges (the homogeneous baseline;
no year or venue features). ``symmetrize=`` overrides the default.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qgnn.data.base import NodeDataset, resolve_data_root
from qgnn.data.files import download, missing_files_error, writable
from qgnn.data.registry import register
from qgnn.errors import DataError
from qgnn.graph import Graph

OGB_NAMES = {"ogbn_arxiv": "ogbn-arxiv", "ogbn_products": "ogbn-products", "ogbn_mag": "ogbn-mag"}
# What each dataset's layout holds (from ogb's nodeproppred/master.csv, version 1.3.6).
LAYOUT = {
    "ogbn_arxiv": {"version": 1, "split": "time", "hetero": False, "extra_node": ["node_year"], "symmetrize": True},
    "ogbn_products": {"version": 1, "split": "sales_ranking", "hetero": False, "extra_node": [], "symmetrize": False},
    "ogbn_mag": {"version": 2, "split": "time", "hetero": True, "extra_node": ["node_year"], "symmetrize": True},
}
MAG_RELATIONS = (
    ("author", "affiliated_with", "institution"),
    ("author", "writes", "paper"),
    ("paper", "cites", "paper"),
    ("paper", "has_topic", "field_of_study"),
)
MAG_NODE_TYPES = ("author", "field_of_study", "institution", "paper")
URL = "http://snap.stanford.edu/ogb/data/nodeproppred/{download_name}.zip"
DOWNLOAD_NAME = {"ogbn_arxiv": "arxiv", "ogbn_products": "products", "ogbn_mag": "mag"}


def _key(name: str) -> str:
    key = name.lower().replace("-", "_")
    if key not in OGB_NAMES:
        raise DataError(f"unknown OGB dataset {name!r}; known: {', '.join(OGB_NAMES)}.")
    return key


def expected_files(key: str, folder: Path) -> list:
    """Every file the reader needs for dataset ``key`` under its folder."""
    spec = LAYOUT[key]
    files = [folder / f"RELEASE_v{spec['version']}.txt"]
    split = folder / "split" / spec["split"]
    if spec["hetero"]:
        raw = folder / "raw"
        files += [raw / "num-node-dict.csv.gz", raw / "triplet-type-list.csv.gz", raw / "nodetype-has-label.csv.gz"]
        for rel in MAG_RELATIONS:
            sub = raw / "relations" / "___".join(rel)
            files += [sub / "edge.csv.gz", sub / "num-edge-list.csv.gz", sub / "edge_reltype.csv.gz"]
        files += [raw / "node-feat" / "paper" / "node-feat.csv.gz", raw / "node-feat" / "paper" / "node_year.csv.gz"]
        files += [raw / "node-label" / "paper" / "node-label.csv.gz"]
        files += [split / "nodetype-has-split.csv.gz"] + [split / "paper" / f"{s}.csv.gz" for s in ("train", "valid", "test")]
    else:
        raw = folder / "raw"
        names = ["edge", "num-node-list", "num-edge-list", "node-feat", "node-label"] + spec["extra_node"]
        files += [raw / f"{n}.csv.gz" for n in names]
        files += [split / f"{s}.csv.gz" for s in ("train", "valid", "test")]
    return files


def _download_zip(key: str, root: Path) -> None:
    """Fetch and unpack the official zip into ``<root>/<key>/`` (no published sha256)."""
    name = DOWNLOAD_NAME[key]
    archive = root / f"{name}.zip"
    if not download(URL.format(download_name=name), archive, None, timeout=60):
        return
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(root)
    except zipfile.BadZipFile as exc:
        raise DataError(f"the downloaded {archive} is corrupt ({exc}); delete it and try again.") from exc
    finally:
        archive.unlink(missing_ok=True)
    target = root / key
    if target.exists():
        shutil.rmtree(target)
    (root / name).rename(target)


def ensure_files(key: str, root: Path, download_missing: bool) -> Path:
    folder = root / key
    missing = [p for p in expected_files(key, folder) if not p.exists()]
    if missing and download_missing and not folder.exists():
        _download_zip(key, root)
        missing = [p for p in expected_files(key, folder) if not p.exists()]
    if missing:
        release = [p for p in missing if p.name.startswith("RELEASE_v")]
        if release and len(missing) == 1:
            raise DataError(
                f"{folder} has no {release[0].name}: it is not version {LAYOUT[key]['version']} of "
                f"{OGB_NAMES[key]} (ogb would ask to re-download it). Delete the folder and "
                f"download the current release ({URL.format(download_name=DOWNLOAD_NAME[key])})."
            )
        raise missing_files_error(
            OGB_NAMES[key], missing,
            f"Unzip {URL.format(download_name=DOWNLOAD_NAME[key])} into the data root and rename "
            f"its folder {DOWNLOAD_NAME[key]}/ to {key}/ (or pass download=True when online).",
        )
    return folder


# ---------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _ogb_cache_load():
    """Let ``ogb`` reload the cache it wrote itself.

    ``ogb`` 1.3.6 saves ``processed/data_processed`` (numpy arrays, pickle protocol 4) and
    reloads it with a bare ``torch.load``; torch >= 2.6 defaults that to ``weights_only=True``,
    which cannot read it at all (protocol-4 framing, numpy globals). Only for the duration
    of the ``NodePropPredDataset`` call, and only for call sites that do not choose
    themselves, torch's documented switch restores the old default. The file is the one
    ``ogb`` wrote in the user's own dataset folder.
    """
    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old


def _read_with_ogb(key: str, root: Path):
    """``(graph dict, labels, split dict)`` through ``NodePropPredDataset`` or its raw readers."""
    try:
        from ogb.nodeproppred import NodePropPredDataset
    except ImportError:
        return _read_without_ogb(key, root)
    # ogb prints progress on stdout; keep stdout for what qgnn itself prints.
    with contextlib.redirect_stdout(sys.stderr):
        forced_safe = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")
        if writable(root / key) and not forced_safe:
            # ogb saves its cache into processed/ without creating the folder.
            (root / key / "processed").mkdir(exist_ok=True)
            with _ogb_cache_load():
                ds = NodePropPredDataset(name=OGB_NAMES[key], root=str(root))
            return ds.graph, ds.labels, ds.get_idx_split(), int(ds.num_classes)
        return _read_in_memory(key, root)


# From ogb 1.3.6's nodeproppred/master.csv, for reading without the ogb package.
NUM_CLASSES = {"ogbn_arxiv": 40, "ogbn_products": 47, "ogbn_mag": 349}
ADD_INVERSE_EDGE = {"ogbn_arxiv": False, "ogbn_products": True, "ogbn_mag": False}


def _csv(path: Path, dtype) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, compression="gzip", header=None).values.astype(dtype)


def _read_without_ogb(key: str, root: Path):
    """``_read_in_memory``'s result without the ``ogb`` package (the fields ``load_ogb`` uses)."""
    folder = root / key
    raw = folder / "raw"
    split_dir = folder / "split" / LAYOUT[key]["split"]
    if LAYOUT[key]["hetero"]:
        rel = ("paper", "cites", "paper")
        edge = _csv(raw / "relations" / "___".join(rel) / "edge.csv.gz", np.int64).T
        feat = _csv(raw / "node-feat" / "paper" / "node-feat.csv.gz", np.float32)
        graph = {"edge_index_dict": {rel: edge}, "node_feat_dict": {"paper": feat},
                 "num_nodes_dict": {"paper": int(feat.shape[0])}}
        labels = {"paper": _csv(raw / "node-label" / "paper" / "node-label.csv.gz", np.float64)}
        split = {s: {"paper": _csv(split_dir / "paper" / f"{s}.csv.gz", np.int64)[:, 0]}
                 for s in ("train", "valid", "test")}
        return graph, labels, split, NUM_CLASSES[key]
    edge = _csv(raw / "edge.csv.gz", np.int64).T
    if ADD_INVERSE_EDGE[key]:  # each edge followed by its reverse, as ogb interleaves them
        edge = np.repeat(edge, 2, axis=1)
        edge[:, 1::2] = edge[::-1, 0::2]
    num_nodes = int(_csv(raw / "num-node-list.csv.gz", np.int64).sum())
    graph = {"edge_index": edge, "node_feat": _csv(raw / "node-feat.csv.gz", np.float32), "num_nodes": num_nodes}
    labels = _csv(raw / "node-label.csv.gz", np.float64)
    split = {s: _csv(split_dir / f"{s}.csv.gz", np.int64)[:, 0] for s in ("train", "valid", "test")}
    return graph, labels, split, NUM_CLASSES[key]


def _meta(key: str):
    """The dataset's row of ogb's own ``nodeproppred/master.csv``."""
    import pandas as pd
    import ogb.nodeproppred

    master = Path(ogb.nodeproppred.__file__).parent / "master.csv"
    return pd.read_csv(master, index_col=0, keep_default_na=False)[OGB_NAMES[key]]


def _read_in_memory(key: str, root: Path):
    """The same raw readers ``NodePropPredDataset`` calls, without writing its cache."""
    import pandas as pd
    from ogb.io.read_graph_raw import (
        read_csv_graph_raw,
        read_csv_heterograph_raw,
        read_node_label_hetero,
        read_nodesplitidx_split_hetero,
    )

    folder = root / key
    raw = str(folder / "raw")
    spec = LAYOUT[key]
    add_inverse = _meta(key)["add_inverse_edge"] == "True"
    num_classes = int(_meta(key)["num classes"])
    split_dir = folder / "split" / spec["split"]
    if spec["hetero"]:
        graph = read_csv_heterograph_raw(raw, add_inverse_edge=False, additional_node_files=["node_year"],
                                         additional_edge_files=["edge_reltype"])[0]
        labels = read_node_label_hetero(raw)
        train, valid, test = read_nodesplitidx_split_hetero(str(split_dir))
        return graph, labels, {"train": train, "valid": valid, "test": test}, num_classes
    graph = read_csv_graph_raw(raw, add_inverse_edge=add_inverse, additional_node_files=spec["extra_node"])[0]
    labels = pd.read_csv(folder / "raw" / "node-label.csv.gz", compression="gzip", header=None).values
    split = {
        s: pd.read_csv(split_dir / f"{s}.csv.gz", compression="gzip", header=None).values.T[0]
        for s in ("train", "valid", "test")
    }
    return graph, labels, split, num_classes


@register(*OGB_NAMES)
def load_ogb(
    name: str,
    root: Optional[str] = None,
    symmetrize: Optional[bool] = None,
    download: bool = True,
) -> NodeDataset:
    """Read an OGB node-classification dataset as a :class:`NodeDataset`.

    Args:
        name: ``ogbn_arxiv`` | ``ogbn_products`` | ``ogbn_mag`` (hyphens accepted).
        root: data root (default ``$QGNN_DATA`` or ``data/``).
        symmetrize: add reverse edges and drop duplicates; default per dataset (module docstring).
        download: fetch the official zip when the dataset folder is absent and we are online.
    """
    key = _key(name)
    data_root = resolve_data_root(root)
    ensure_files(key, data_root, download)
    try:
        graph, labels, split, num_classes = _read_with_ogb(key, data_root)
    except DataError:
        raise
    except Exception as exc:  # ogb raises RuntimeError/AssertionError/pandas errors on bad files
        raise DataError(
            f"ogb could not read {data_root / key} ({type(exc).__name__}: {exc}). The files are "
            "malformed or from another release; download the dataset again."
        ) from exc

    if LAYOUT[key]["hetero"]:
        rel = ("paper", "cites", "paper")
        edge_index = graph["edge_index_dict"][rel]
        x = graph["node_feat_dict"]["paper"]
        num_nodes = int(graph["num_nodes_dict"]["paper"])
        labels = labels["paper"]
        split = {k: v["paper"] for k, v in split.items()}
    else:
        edge_index, x, num_nodes = graph["edge_index"], graph["node_feat"], int(graph["num_nodes"])

    if x is None or x.shape[0] != num_nodes:
        raise DataError(f"{OGB_NAMES[key]}: node features cover {0 if x is None else x.shape[0]} of {num_nodes} nodes.")
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != num_nodes or np.isnan(y.astype(np.float64)).any():
        raise DataError(f"{OGB_NAMES[key]}: node-label.csv.gz must give one label per node ({num_nodes}).")
    y = torch.from_numpy(y.astype(np.int64))
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{OGB_NAMES[key]}: labels must lie in [0, {num_classes}), found {int(y.min())}..{int(y.max())}.")

    edge_index = np.asarray(edge_index)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise DataError(
            f"{OGB_NAMES[key]}: edge.csv.gz must have 2 columns (source, target) per line; "
            f"it has {edge_index.shape[0] if edge_index.ndim == 2 else 'no'} columns."
        )
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise DataError(f"{OGB_NAMES[key]}: edge.csv.gz names node {int(edge_index.max())} of {num_nodes}.")
    src = torch.from_numpy(np.ascontiguousarray(edge_index[0])).long()
    dst = torch.from_numpy(np.ascontiguousarray(edge_index[1])).long()
    if LAYOUT[key]["symmetrize"] if symmetrize is None else symmetrize:
        src, dst = _symmetrize(src, dst, num_nodes)
    graph_t = Graph.from_edges(src, dst, num_nodes)
    splits = {"train": split["train"], "val": split["valid"], "test": split["test"]}
    splits = {k: torch.from_numpy(np.asarray(v).astype(np.int64)) for k, v in splits.items()}
    return NodeDataset(OGB_NAMES[key], graph_t, torch.from_numpy(np.asarray(x, dtype=np.float32)), y, splits, num_classes)


def _symmetrize(src: torch.Tensor, dst: torch.Tensor, n: int):
    """Both directions, duplicates dropped (1-D keys: ``torch.unique(dim=1)`` is far slower)."""
    key = torch.unique(torch.cat([src * n + dst, dst * n + src]))
    return key // n, key % n


def evaluate(name: str, y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """Accuracy by the official :class:`ogb.nodeproppred.Evaluator` (``y_*`` class ids ``(M,)``).

    Without the ``ogb`` package: the same number, computed as the evaluator does.
    """
    try:
        from ogb.nodeproppred import Evaluator
    except ImportError:
        _key(name)
        return float((y_true.reshape(-1) == y_pred.reshape(-1)).float().mean())

    evaluator = Evaluator(OGB_NAMES[_key(name)])
    result = evaluator.eval({"y_true": y_true.reshape(-1, 1), "y_pred": y_pred.reshape(-1, 1)})
    return float(result["acc"])


# ---------------------------------------------------------------------------- synthetic writer
def _write_csv_gz(path: Path, array: np.ndarray, fmt: str) -> None:
    """Headerless CSV, gzip level 1 (fast enough for an ogbn-arxiv-sized feature matrix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    with gzip.open(path, "wt", compresslevel=1) as f:
        np.savetxt(f, array, fmt=fmt, delimiter=",")


def _random_edges(rng: np.random.Generator, n_src: int, n_dst: int, m: int, simple: bool) -> np.ndarray:
    """``(2, m)`` distinct edges; ``simple`` (same node set): no self-loops, no reciprocal pairs."""
    if simple:
        capacity = n_src * (n_src - 1) // 2
    else:
        capacity = n_src * n_dst
    if m > capacity:
        raise ValueError(f"cannot place {m} distinct edges among {n_src} x {n_dst} nodes.")
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.size < m:
        draw = int((m - chosen.size) * 1.2) + 16
        a = rng.integers(0, n_src, draw, dtype=np.int64)
        b = rng.integers(0, n_dst, draw, dtype=np.int64)
        if simple:
            keep = a != b
            a, b = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        key = np.concatenate([chosen, a * n_dst + b])
        _, first = np.unique(key, return_index=True)
        chosen = key[np.sort(first)]  # keep draw order: the prefix stays random
    chosen = chosen[:m]
    a, b = chosen // n_dst, chosen % n_dst
    if simple:  # random orientation, so the directed edges are not all low -> high
        flip = rng.random(m) < 0.5
        a, b = np.where(flip, b, a), np.where(flip, a, b)
    return np.stack([a, b])


def write_synthetic_ogb(
    root,
    name: str,
    num_nodes: int,
    num_edges: int,
    num_features: int,
    num_classes: int,
    seed: int = 0,
) -> Path:
    """Write a random dataset in OGB's exact raw layout under ``<root>/<name>/``.

    Edges are distinct, without self-loops or reciprocal pairs, so a symmetrised reader
    sees exactly ``2 * num_edges`` edges. Splits: a random 60/20/20 partition of the nodes
    (papers for mag). Labels are uniform in ``[0, num_classes)``. For mag, ``num_nodes`` and
    ``num_edges`` are the paper nodes and paper-cites-paper edges; the other node types and
    relations get small random fillers so that ``ogb``'s heterogeneous reader is exercised.
    ogbn-arxiv-sized (169343 nodes, 1166243 edges, 128 features) takes about 15 s.

    Returns the dataset folder.
    """
    key = _key(name)
    spec = LAYOUT[key]
    rng = np.random.default_rng(seed)
    folder = Path(root) / key
    if folder.exists():
        shutil.rmtree(folder)
    raw = folder / "raw"
    raw.mkdir(parents=True)
    (folder / f"RELEASE_v{spec['version']}.txt").write_text(
        f"# Synthetic {OGB_NAMES[key]} in OGB's raw layout (written by qgnn, seed {seed}).\n"
    )
    feats = rng.standard_normal((num_nodes, num_features)).astype(np.float32)
    labels = rng.integers(0, num_classes, num_nodes)
    years = rng.integers(2000, 2021, num_nodes)
    perm = rng.permutation(num_nodes)
    n_train, n_val = int(0.6 * num_nodes), int(0.2 * num_nodes)
    parts = {"train": np.sort(perm[:n_train]), "valid": np.sort(perm[n_train : n_train + n_val]),
             "test": np.sort(perm[n_train + n_val :])}
    split = folder / "split" / spec["split"]

    if not spec["hetero"]:
        edges = _random_edges(rng, num_nodes, num_nodes, num_edges, simple=True)
        _write_csv_gz(raw / "edge.csv.gz", edges.T, "%d")
        _write_csv_gz(raw / "num-node-list.csv.gz", np.array([num_nodes]), "%d")
        _write_csv_gz(raw / "num-edge-list.csv.gz", np.array([num_edges]), "%d")
        _write_csv_gz(raw / "node-feat.csv.gz", feats, "%.6f")
        _write_csv_gz(raw / "node-label.csv.gz", labels, "%d")
        if "node_year" in spec["extra_node"]:
            _write_csv_gz(raw / "node_year.csv.gz", years, "%d")
        for s, idx in parts.items():
            _write_csv_gz(split / f"{s}.csv.gz", idx, "%d")
        return folder

    counts = {"author": max(2, num_nodes // 2), "field_of_study": max(2, num_nodes // 20),
              "institution": max(2, num_nodes // 50), "paper": num_nodes}
    with gzip.open(raw / "num-node-dict.csv.gz", "wt") as f:
        f.write(",".join(MAG_NODE_TYPES) + "\n" + ",".join(str(counts[t]) for t in MAG_NODE_TYPES) + "\n")
    _write_csv_gz(raw / "triplet-type-list.csv.gz", np.array(MAG_RELATIONS, dtype=object), "%s")
    for i, (head, rel, tail) in enumerate(MAG_RELATIONS):
        if rel == "cites":
            edges = _random_edges(rng, num_nodes, num_nodes, num_edges, simple=True)
        else:
            m = min(counts[head] * counts[tail], max(1, counts[head]))
            edges = _random_edges(rng, counts[head], counts[tail], m, simple=False)
        sub = raw / "relations" / f"{head}___{rel}___{tail}"
        _write_csv_gz(sub / "edge.csv.gz", edges.T, "%d")
        _write_csv_gz(sub / "num-edge-list.csv.gz", np.array([edges.shape[1]]), "%d")
        _write_csv_gz(sub / "edge_reltype.csv.gz", np.full(edges.shape[1], i), "%d")
    _write_csv_gz(raw / "node-feat" / "paper" / "node-feat.csv.gz", feats, "%.6f")
    _write_csv_gz(raw / "node-feat" / "paper" / "node_year.csv.gz", years, "%d")
    _write_csv_gz(raw / "node-label" / "paper" / "node-label.csv.gz", labels, "%d")
    with gzip.open(raw / "nodetype-has-label.csv.gz", "wt") as f:
        f.write(",".join(MAG_NODE_TYPES) + "\n" + ",".join("True" if t == "paper" else "False" for t in MAG_NODE_TYPES) + "\n")
    split.mkdir(parents=True, exist_ok=True)
    with gzip.open(split / "nodetype-has-split.csv.gz", "wt") as f:
        f.write(",".join(MAG_NODE_TYPES) + "\n" + ",".join("True" if t == "paper" else "False" for t in MAG_NODE_TYPES) + "\n")
    for s, idx in parts.items():
        _write_csv_gz(split / "paper" / f"{s}.csv.gz", idx, "%d")
    return folder
