"""Planetoid citation graphs (Cora, CiteSeer, PubMed), public split.

Raw layout (Yang et al., 2016; the files of github.com/kimiyoung/planetoid)::

    <root>/<Name>/raw/ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}

``x, tx, allx`` are python-2 pickles of ``scipy.sparse.csr_matrix``; ``y, ty, ally`` pickled
numpy one-hot arrays; ``graph`` a pickled ``{node: [neighbours]}`` dict; ``test.index`` one
id per line. Row k of ``tx`` belongs to the k-th id of ``test.index``; CiteSeer has 15
isolated nodes in the test id range without a row, left as zero rows as in the GCN
reference code. The graph is made
undirected, duplicate edges and self-loops removed (as PyG does: Cora has 10,556 directed
edges). Public split: the ``x`` rows train (20 per class), the next 500 nodes validate, the 1000 test
ids test.

The pickles are read without SciPy: a restricted unpickler maps the sparse-matrix class
onto a small holder of its ``data / indices / indptr`` arrays and refuses anything else.
"""

from __future__ import annotations

import io
import pickle
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qgnn.data.base import NodeDataset, resolve_data_root, sha256, verify_checksum
from qgnn.data.registry import register
from qgnn.errors import DataError
from qgnn.graph import Graph, symmetrize

NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
URL = "https://github.com/kimiyoung/planetoid/raw/master/data/ind.{name}.{part}"

# sha256 of the canonical files (kimiyoung/planetoid, commit af6abf4).
CHECKSUMS = {
    "cora": {
        "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
        "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    },
    "citeseer": {
        "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
        "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    },
    "pubmed": {
        "x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
        "y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
        "tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
        "ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
        "allx": "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
        "ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
        "graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
        "test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
    },
}


class _SparseMatrix:
    """Stand-in for a pickled ``scipy.sparse.csr_matrix``: keeps its arrays only."""

    def __setstate__(self, state):
        self.__dict__.update(state)

    def to_dense(self) -> np.ndarray:
        rows, cols = self._shape
        out = np.zeros((rows, cols), dtype=np.float32)
        counts = np.diff(self.indptr)
        out[np.repeat(np.arange(rows), counts), self.indices] = self.data
        return out


class _PlanetoidUnpickler(pickle.Unpickler):
    """Allows numpy arrays, the sparse matrix holder and ``defaultdict``; nothing else."""

    _ALLOWED = {
        ("collections", "defaultdict"),
        ("builtins", "list"),
        ("__builtin__", "list"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module, name):
        if module.startswith("scipy.sparse") and name == "csr_matrix":
            return _SparseMatrix
        if (module, name) in self._ALLOWED:
            if module == "__builtin__":
                module = "builtins"
            if module == "copy_reg":
                module = "copyreg"
            if module == "numpy.core.multiarray":
                module = "numpy._core.multiarray" if hasattr(np, "_core") else module
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a Planetoid file")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _PlanetoidUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except Exception as exc:
        raise DataError(
            f"{path} is not a readable Planetoid pickle ({type(exc).__name__}: {exc}). "
            "Delete it and fetch the original file again."
        ) from exc


def _dense(obj) -> np.ndarray:
    return obj.to_dense() if isinstance(obj, _SparseMatrix) else np.asarray(obj, dtype=np.float32)


def raw_dir(name: str, root: Optional[str] = None) -> Path:
    return resolve_data_root(root) / NAMES[name] / "raw"


def ensure_raw_files(name: str, root: Optional[str] = None, download: bool = True) -> Path:
    """Check (and, when online, download) the raw files; verify their sha256."""
    folder = raw_dir(name, root)
    missing = [p for p in PARTS if not (folder / f"ind.{name}.{p}").exists()]
    if missing and download:
        missing = _download(name, folder, missing)
    if missing:
        listing = "\n".join(f"  {folder / f'ind.{name}.{p}'}" for p in missing)
        hint = ""
        if name == "pubmed" and missing == ["allx"]:
            hint = (
                " PubMed cannot be built without ind.pubmed.allx: it holds the features of "
                "18,657 of the 19,717 nodes."
            )
        raise DataError(
            f"{NAMES[name]} is incomplete: missing {len(missing)} raw file(s):\n{listing}\n"
            f"Put the Planetoid files there (from {URL.format(name=name, part='<part>')}), "
            f"or point --data-root / QGNN_DATA at a folder holding {NAMES[name]}/raw/.{hint}"
        )
    for part in PARTS:
        verify_checksum(folder / f"ind.{name}.{part}", CHECKSUMS[name][part])
    return folder


def _download(name: str, folder: Path, parts: list[str]) -> list[str]:
    """Fetch missing files; return those that could not be fetched (e.g. offline)."""
    still_missing = []
    for part in parts:
        target = folder / f"ind.{name}.{part}"
        try:
            with urllib.request.urlopen(URL.format(name=name, part=part), timeout=30) as r:
                payload = r.read()
        except (urllib.error.URLError, OSError, TimeoutError):
            still_missing.append(part)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(payload)
        if sha256(tmp) != CHECKSUMS[name][part]:
            tmp.unlink()
            raise DataError(f"downloaded {target.name} does not match its published sha256.")
        tmp.replace(target)
    return still_missing


@register("cora", "citeseer", "pubmed")
def load_planetoid(name: str, root: Optional[str] = None, normalize_features: bool = True,
                   download: bool = True) -> NodeDataset:
    """Read a Planetoid dataset with its public split.

    Args:
        name: ``"cora"``, ``"citeseer"`` or ``"pubmed"``.
        root: data root (default ``$QGNN_DATA`` or ``data/``).
        normalize_features: scale each feature row to sum 1 (as GCN and GAT do).
        download: fetch missing files from the canonical source when online.

    Returns:
        a :class:`NodeDataset` with ``x`` ``(N, F)``, ``y`` ``(N,)`` and the split indices.
    """
    folder = ensure_raw_files(name, root, download)
    raw = {p: _unpickle(folder / f"ind.{name}.{p}") for p in PARTS if p != "test.index"}
    try:
        test_ids = np.array(
            [int(line) for line in (folder / f"ind.{name}.test.index").read_text().split()]
        )
    except ValueError as exc:
        raise DataError(f"{folder / f'ind.{name}.test.index'} must hold one integer per line.") from exc

    x, tx, allx = (_dense(raw[p]) for p in ("x", "tx", "allx"))
    y, ty, ally = (np.asarray(raw[p], dtype=np.float32) for p in ("y", "ty", "ally"))
    if tx.shape[0] != test_ids.size or ty.shape[0] != test_ids.size:
        raise DataError(f"{NAMES[name]}: tx/ty have {tx.shape[0]} rows for {test_ids.size} test ids.")
    num_train = y.shape[0]
    # Row k of tx/ty belongs to node test_ids[k]; ids in the test range without a row
    # (CiteSeer's isolated nodes) keep zero features and no label (they are in no split).
    num_nodes = max(allx.shape[0], int(test_ids.max()) + 1)
    features = np.zeros((num_nodes, allx.shape[1]), dtype=np.float32)
    labels = np.zeros((num_nodes, ally.shape[1]), dtype=np.float32)
    features[: allx.shape[0]], labels[: ally.shape[0]] = allx, ally
    features[test_ids], labels[test_ids] = tx, ty
    order = np.sort(test_ids)

    graph_dict = raw["graph"]
    if not isinstance(graph_dict, (dict, defaultdict)):
        raise DataError(f"{folder / f'ind.{name}.graph'} does not hold an adjacency dict.")
    src = [u for u, vs in graph_dict.items() for _ in vs]
    dst = [v for vs in graph_dict.values() for v in vs]
    src_t, dst_t = symmetrize(src, dst)
    keep = src_t != dst_t
    src_t, dst_t = src_t[keep], dst_t[keep]
    # Some graph entries name ids past the feature rows (none in the canonical files).
    num_nodes = max(num_nodes, int(max(src_t.max(), dst_t.max())) + 1)
    graph = Graph.from_edges(src_t, dst_t, num_nodes)

    x_t = torch.from_numpy(features)
    if normalize_features:
        x_t = x_t / x_t.sum(1, keepdim=True).clamp(min=1e-12)
    y_t = torch.from_numpy(labels.argmax(1)).long()
    splits = {
        "train": torch.arange(num_train),
        "val": torch.arange(num_train, num_train + 500),
        "test": torch.from_numpy(order).long(),
    }
    return NodeDataset(NAMES[name], graph, x_t, y_t, splits, int(labels.shape[1]))
