"""REDDIT-BINARY (Yanardag & Vishwanathan, 2015): 2000 discussion-thread graphs, 2 classes.

Two raw formats are read, found under ``<root>/REDDIT-BINARY/raw/``:

1. **GIN / DGCNN text format** (``REDDIT-BINARY.zip`` holding ``REDDIT-BINARY/REDDIT-BINARY.txt``
   and ``10fold_idx/``, or the ``.txt`` itself). Line 1: the number of graphs ``G``. Then per
   graph a line ``n label`` and ``n`` node lines ``tag m nbr_1 ... nbr_m [attributes]``,
   neighbours 0-based within the graph. This copy labels the classes 0 and 2 (the TU labels
   -1 and 1 shifted by ``dortmund2txt.m``).
2. **TU format** (``REDDIT-BINARY_A.txt``: one ``i, j`` edge per line over 1-based global
   node ids; ``_graph_indicator.txt``: the 1-based graph of each node;
   ``_graph_labels.txt``: one label per graph, -1/1), loose or inside a ``REDDIT-BINARY.zip``.

Either way the sorted distinct raw labels map to 0..C-1 (0/2 and -1/1 both give 0/1, in
the same order). Graphs are undirected: every edge is stored in both directions, repeated
edges are dropped (as GIN's loader does through networkx), so a graph with ``m`` undirected
edges has ``2m`` directed ``Graph`` edges.

Node features (the dataset has none; ``features=``):

- ``"degree"`` (default): ``x`` is the ``(n,)`` int64 node degree, clamped to
  ``max_degree``; ``num_node_types = max_degree + 1``. A categorical degree embedding is
  the one-hot degree of GIN's ``degree_as_tag`` without materialising a 3000-wide one-hot.
- ``"constant"``: ``x`` is ``(n, 1)`` float ones (what GIN uses on REDDIT).
- ``"tag"``: ``x`` is the GIN file's node tag column as ``(n,)`` int64 (all 0 here).

Evaluation is 10-fold cross-validation: the reader returns no splits unless ``fold`` is
given; :func:`stratified_folds` (scikit-learn ``StratifiedKFold``, as GIN) and
:func:`shipped_folds` (the zip's ``10fold_idx``) give the folds.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qgnn.data.base import GraphDataset, GraphSample, resolve_data_root
from qgnn.data.files import (
    ProcessedCache,
    download,
    file_key,
    missing_files_error,
    pack_samples,
    unpack_samples,
)
from qgnn.data.registry import register
from qgnn.errors import DataError
from qgnn.graph import Graph

NAME = "REDDIT-BINARY"
# The GIN-format zip as published in yeweiysh/IHGNN (commit b172146); sha256 below.
URL = (
    "https://github.com/yeweiysh/IHGNN/raw/b17214636dd0a0f83b05849cc6dc9ec2ebd4efbf/"
    "data/REDDIT-BINARY.zip"
)
ZIP_SHA256 = "c45536bdd84db7a4913fd6a45ae7616a12a02bf1f444a4effbce903524d62121"
TU_SUFFIXES = ("_A.txt", "_graph_indicator.txt", "_graph_labels.txt")


# ---------------------------------------------------------------------------- raw records
class _RawGraphs:
    """Parsed raw data before features: per-graph ``(src, dst)`` (both directions) and labels."""

    def __init__(self, edges: list, num_nodes: list, labels: np.ndarray, tags: Optional[list]):
        self.edges = edges  # list of (src, dst) int64 tensors, local ids
        self.num_nodes = num_nodes
        self.labels = labels  # raw label values, one per graph
        self.tags = tags  # per-graph int64 arrays or None


def _undirected(src: np.ndarray, dst: np.ndarray, num_nodes: int):
    """Both directions, duplicates dropped, as int64 tensors sorted by ``(src, dst)``.

    Pairs are encoded as ``src * n + dst`` so one 1-D ``np.unique`` does the work
    (``torch.unique(dim=1)`` is about 50x slower on a few thousand small graphs).
    """
    n = max(int(num_nodes), 1)
    key = np.unique(np.concatenate([src * n + dst, dst * n + src]))
    return torch.from_numpy(key // n), torch.from_numpy(key % n)


def parse_gin_text(text: str, source: str = "REDDIT-BINARY.txt") -> _RawGraphs:
    """Parse the GIN/DGCNN text format (see the module docstring).

    Raises :class:`DataError` naming the line for a truncated file, a malformed line or a
    neighbour id outside its graph.
    """
    lines = text.split("\n")
    line_no = 0

    def fail(message: str) -> DataError:
        return DataError(
            f"{source}, line {line_no + 1}: {message}. The file is truncated or not in the "
            "GIN text format (first line: number of graphs; per graph 'n label', then n lines "
            "'tag m neighbour...'). Fetch the original file again."
        )

    def next_fields() -> list:
        nonlocal line_no
        if line_no >= len(lines) or (line_no == len(lines) - 1 and not lines[line_no].strip()):
            raise fail("unexpected end of file")
        fields = lines[line_no].split()
        line_no += 1
        return fields

    try:
        header = next_fields()
        if len(header) != 1:
            line_no -= 1
            raise fail(f"expected the number of graphs, got {lines[line_no].strip()!r}")
        num_graphs = int(header[0])
        edges, sizes, labels, tags = [], [], [], []
        for _ in range(num_graphs):
            fields = next_fields()
            if len(fields) < 2:
                line_no -= 1
                raise fail(f"expected 'num_nodes label', got {lines[line_no].strip()!r}")
            n, label = int(fields[0]), int(fields[1])
            counts = np.empty(n, dtype=np.int64)
            node_tags = np.empty(n, dtype=np.int64)
            neighbours: list = []
            for v in range(n):
                row = next_fields()
                if len(row) < 2:
                    line_no -= 1
                    raise fail("a node line needs 'tag m' and m neighbours")
                m = int(row[1])
                if len(row) < 2 + m:
                    line_no -= 1
                    raise fail(f"node {v} announces {m} neighbours but lists {len(row) - 2}")
                node_tags[v] = int(row[0])
                counts[v] = m
                # Anything after the m neighbours is a node attribute vector (GIN allows it);
                # REDDIT-BINARY has none, so it is ignored.
                neighbours.extend(row[2 : 2 + m])
            dst = np.array(neighbours, dtype=np.int64)
            if dst.size and (dst.min() < 0 or dst.max() >= n):
                bad = int(dst[(dst < 0) | (dst >= n)][0])
                raise fail(f"graph {len(sizes)} has {n} nodes but names neighbour {bad}")
            src = np.repeat(np.arange(n, dtype=np.int64), counts)
            edges.append(_undirected(src, dst, n))
            sizes.append(n)
            labels.append(label)
            tags.append(node_tags)
    except ValueError as exc:
        line_no -= 1  # the failing line was already consumed
        raise fail(f"not an integer ({exc})") from exc
    if any(line.strip() for line in lines[line_no:]):
        raise fail(f"text after the {num_graphs} graphs the first line announces")
    return _RawGraphs(edges, sizes, np.array(labels, dtype=np.int64), tags)


def _read_int_table(data: bytes, source: str, columns: int) -> np.ndarray:
    """An integer table (comma and/or whitespace separated) as ``(rows, columns)``."""
    import pandas as pd

    try:
        # TU files write "i, j": comma separated with a space after the comma.
        table = pd.read_csv(io.BytesIO(data), header=None, sep=",", skipinitialspace=True)
    except Exception as exc:
        raise DataError(f"{source} is not a table of integers ({exc}).") from exc
    table = table.dropna(axis=1, how="all")
    if table.shape[1] != columns:
        raise DataError(
            f"{source} has {table.shape[1]} column(s) per line, expected {columns}. "
            "The file is malformed or not from the TU collection."
        )
    if table.isna().any().any():
        row = int(np.nonzero(table.isna().any(axis=1).to_numpy())[0][0])
        raise DataError(f"{source}, line {row + 1}: missing value.")
    try:
        return table.to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source} holds a non-integer value ({exc}).") from exc


def parse_tu(a: bytes, indicator: bytes, graph_labels: bytes, prefix: str = NAME) -> _RawGraphs:
    """Parse the TU format: 1-based global node ids, nodes of a graph contiguous."""
    edge = _read_int_table(a, f"{prefix}_A.txt", 2) - 1
    graph_of = _read_int_table(indicator, f"{prefix}_graph_indicator.txt", 1)[:, 0] - 1
    labels = _read_int_table(graph_labels, f"{prefix}_graph_labels.txt", 1)[:, 0]
    num_nodes, num_graphs = graph_of.size, labels.size
    if graph_of.size and (graph_of.min() < 0 or graph_of.max() >= num_graphs):
        raise DataError(
            f"{prefix}_graph_indicator.txt names graph {graph_of.max() + 1} but "
            f"{prefix}_graph_labels.txt has {num_graphs} labels: the files do not belong together."
        )
    if np.any(np.diff(graph_of) < 0):
        raise DataError(f"{prefix}_graph_indicator.txt: the nodes of each graph must be contiguous.")
    if edge.size and (edge.min() < 0 or edge.max() >= num_nodes):
        raise DataError(
            f"{prefix}_A.txt names node {edge.max() + 1}, but the indicator file lists {num_nodes} nodes."
        )
    sizes = np.bincount(graph_of, minlength=num_graphs)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    g_src, g_dst = graph_of[edge[:, 0]], graph_of[edge[:, 1]]
    if np.any(g_src != g_dst):
        raise DataError(f"{prefix}_A.txt has an edge between two graphs (line {int(np.argmax(g_src != g_dst)) + 1}).")
    order = np.argsort(g_src, kind="stable")
    bounds = np.searchsorted(g_src[order], np.arange(num_graphs + 1))
    edges = []
    for g in range(num_graphs):
        sel = order[bounds[g] : bounds[g + 1]]
        edges.append(_undirected(edge[sel, 0] - first[g], edge[sel, 1] - first[g], sizes[g]))
    return _RawGraphs(edges, sizes.tolist(), labels, None)


# ---------------------------------------------------------------------------- locating files
def raw_dir(root: Optional[str] = None) -> Path:
    return resolve_data_root(root) / NAME / "raw"


def _zip_members(path: Path) -> tuple[zipfile.ZipFile, list]:
    try:
        zf = zipfile.ZipFile(path)
        bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable zip ({exc}): it is truncated or corrupt. Delete it and "
            f"download it again ({URL}, sha256 {ZIP_SHA256})."
        ) from exc
    if bad is not None:
        raise DataError(f"{path}: member {bad} fails its CRC check; the zip is corrupt. Download it again.")
    return zf, [n for n in zf.namelist() if not n.endswith("/")]


def _find_sources(folder: Path) -> dict:
    """Which raw files exist: ``{"kind": "gin"|"tu", ...}`` or ``{}``."""
    zpath = folder / f"{NAME}.zip"
    for base in (folder, folder / NAME):
        tu = [base / f"{NAME}{s}" for s in TU_SUFFIXES]
        if all(p.exists() for p in tu):
            return {"kind": "tu", "files": tu}
        if (base / f"{NAME}.txt").exists():
            return {"kind": "gin", "files": [base / f"{NAME}.txt"]}
    if zpath.exists():
        return {"kind": "zip", "files": [zpath]}
    return {}


def ensure_raw_files(root: Optional[str] = None, download_missing: bool = True) -> dict:
    folder = raw_dir(root)
    found = _find_sources(folder)
    if not found and download_missing:
        download(URL, folder / f"{NAME}.zip", ZIP_SHA256)
        found = _find_sources(folder)
    if not found:
        raise missing_files_error(
            NAME,
            [folder / f"{NAME}.zip"] + [folder / f"{NAME}{s}" for s in TU_SUFFIXES],
            f"Put either the GIN-format zip ({URL}) or the three TU files there.",
        )
    return found


def _read_raw(found: dict) -> _RawGraphs:
    if found["kind"] == "gin":
        path = found["files"][0]
        return parse_gin_text(path.read_text(), str(path))
    if found["kind"] == "tu":
        a, ind, lab = (p.read_bytes() for p in found["files"])
        return parse_tu(a, ind, lab)
    path = found["files"][0]
    zf, members = _zip_members(path)
    with zf:
        by_suffix = {s: [m for m in members if m.endswith(f"{NAME}{s}")] for s in TU_SUFFIXES}
        if all(by_suffix.values()):
            a, ind, lab = (zf.read(by_suffix[s][0]) for s in TU_SUFFIXES)
            return parse_tu(a, ind, lab)
        txt = [m for m in members if m.endswith(".txt") and "fold_idx" not in m]
        if not txt:
            raise DataError(
                f"{path} holds neither {NAME}.txt (GIN format) nor the TU files "
                f"({', '.join(NAME + s for s in TU_SUFFIXES)}). Members: {', '.join(members[:10])}."
            )
        try:
            text = zf.read(txt[0]).decode()
        except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read {txt[0]} ({exc}); the zip is corrupt. Download it again.") from exc
        return parse_gin_text(text, f"{path}:{txt[0]}")


# ---------------------------------------------------------------------------- dataset
def build_samples(raw: _RawGraphs) -> list:
    """Graphs with ``x`` = degree (int64; features are chosen later) and ``y`` the class."""
    values = np.unique(raw.labels)
    y = np.searchsorted(values, raw.labels)
    samples = []
    for (src, dst), n, label in zip(raw.edges, raw.num_nodes, y):
        graph = Graph.from_edges(src, dst, n)
        samples.append(GraphSample(graph, graph.in_degrees().clone(), torch.tensor(int(label))))
    return samples


def _with_features(samples: list, tags: Optional[list], features: str, max_degree: Optional[int]):
    if features == "degree":
        top = max(int(s.x.max()) if s.x.numel() else 0 for s in samples)
        cap = top if max_degree is None else int(max_degree)
        return [GraphSample(s.graph, s.x.clamp(max=cap), s.y) for s in samples], cap + 1
    if features == "constant":
        return [GraphSample(s.graph, torch.ones(s.graph.num_nodes, 1), s.y) for s in samples], None
    if features == "tag":
        if tags is None:
            raise DataError("features='tag' needs the GIN text format (TU files carry no tag column here).")
        values = np.unique(np.concatenate(tags)) if tags else np.zeros(0, dtype=np.int64)
        out = [
            GraphSample(s.graph, torch.from_numpy(np.searchsorted(values, t)).long(), s.y)
            for s, t in zip(samples, tags)
        ]
        return out, max(len(values), 1)
    raise DataError(f"features must be 'degree', 'constant' or 'tag', got {features!r}.")


def stratified_folds(labels: torch.Tensor, n_folds: int = 10, seed: int = 0) -> list:
    """``[(train_idx, test_idx)] * n_folds`` from ``StratifiedKFold(shuffle=True)`` (as GIN)."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    y = labels.cpu().numpy()
    return [
        (torch.from_numpy(tr).long(), torch.from_numpy(te).long())
        for tr, te in skf.split(np.zeros(len(y)), y)
    ]


def shipped_folds(root: Optional[str] = None) -> list:
    """The 10 folds shipped in the GIN zip's ``10fold_idx`` (0-based graph indices)."""
    path = raw_dir(root) / f"{NAME}.zip"
    if not path.exists():
        raise missing_files_error(NAME, [path], f"The shipped folds live in the GIN-format zip ({URL}).")
    zf, members = _zip_members(path)
    folds = []
    with zf:
        for k in range(1, 11):
            pair = []
            for part in ("train", "test"):
                name = [m for m in members if m.endswith(f"10fold_idx/{part}_idx-{k}.txt")]
                if not name:
                    raise DataError(f"{path} has no 10fold_idx/{part}_idx-{k}.txt.")
                pair.append(torch.tensor([int(t) for t in zf.read(name[0]).split()], dtype=torch.long))
            folds.append(tuple(pair))
    return folds


@register("reddit_binary")
def load_reddit_binary(
    name: str = "reddit_binary",
    root: Optional[str] = None,
    features: str = "degree",
    max_degree: Optional[int] = None,
    fold: Optional[int] = None,
    folds: str = "stratified",
    seed: int = 0,
    download: bool = True,
    cache: bool = True,
) -> GraphDataset:
    """Read REDDIT-BINARY as a :class:`GraphDataset` (task ``graph-cls``, 2 classes).

    Args:
        root: data root (default ``$QGNN_DATA`` or ``data/``).
        features: ``"degree"`` | ``"constant"`` | ``"tag"`` (see the module docstring).
        max_degree: clamp for degree features (default: the largest degree in the data).
        fold: ``None`` for no splits (the driver makes folds), else ``0..9``: ``splits``
            gets that fold's ``train`` and ``test`` indices.
        folds: ``"stratified"`` (``StratifiedKFold(10, shuffle, seed)``) or ``"shipped"``.
        download: fetch the GIN zip (sha256-checked) when no raw file is present.
        cache: keep the parsed graphs under ``REDDIT-BINARY/processed/`` (memory if read-only).

    Each sample: ``graph`` (``n`` nodes, ``2m`` directed edges), ``x`` per ``features``,
    ``y`` a ``()`` int64 class in {0, 1}.
    """
    found = ensure_raw_files(root, download)
    processed = resolve_data_root(root) / NAME / "processed"

    def build() -> dict:
        raw = _read_raw(found)
        payload = pack_samples(build_samples(raw))
        if raw.tags is not None:
            payload["tags"] = torch.from_numpy(np.concatenate(raw.tags)) if raw.tags else torch.zeros(0)
        return payload

    payload = ProcessedCache(processed, "reddit_binary", cache).get(
        ("reddit_binary", found["kind"], file_key(found["files"])), build
    )
    samples = unpack_samples(payload)
    tags = None
    if "tags" in payload:
        tags = [t.numpy() for t in torch.split(payload["tags"], payload["num_nodes"].tolist())]
    samples, num_types = _with_features(samples, tags, features, max_degree)
    num_classes = int(torch.stack([s.y for s in samples]).max()) + 1 if samples else 0
    if num_classes != 2:
        raise DataError(f"REDDIT-BINARY must have 2 classes; the raw files give {num_classes}.")
    dataset = GraphDataset(
        "REDDIT-BINARY", samples, "graph-cls", num_classes=2, num_node_types=num_types
    )
    if fold is not None:
        if folds not in ("shipped", "stratified"):
            raise DataError(f"folds must be 'stratified' or 'shipped', got {folds!r}.")
        if not 0 <= int(fold) < 10:
            raise DataError(f"fold must be in 0..9 (10-fold cross-validation), got {fold}.")
        all_folds = shipped_folds(root) if folds == "shipped" else stratified_folds(dataset.labels, 10, seed)
        train, test = all_folds[int(fold)]
        dataset.splits = {"train": train, "test": test}
    return dataset
