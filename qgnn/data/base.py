"""Dataset containers shared by every reader, and the data-root rules.

Readers return one of two containers:

- :class:`NodeDataset`: one graph, node features and labels, index splits
  (node classification: Planetoid, OGB node property prediction).
- :class:`GraphDataset`: many small graphs (:class:`GraphSample`), graph labels or
  targets, and index splits or folds (graph classification and regression).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from qgnn.errors import DataError
from qgnn.graph import Graph

Tensor = torch.Tensor

DATA_ROOT_ENV = "QGNN_DATA"
DEFAULT_DATA_ROOT = "data"


def resolve_data_root(root: Optional[str] = None) -> Path:
    """The data root: the argument, else ``$QGNN_DATA``, else ``data/``."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: Optional[str]) -> None:
    """Raise :class:`DataError` when ``path``'s sha256 differs from ``expected``."""
    if expected is None:
        return
    actual = sha256(path)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or not the expected file: sha256 {actual}, expected {expected}. "
            "Delete it and download it again (qgnn downloads missing files when online)."
        )


@dataclass
class NodeDataset:
    """One graph with node features, labels and index splits.

    Attributes:
        graph: the :class:`Graph` (``N`` nodes).
        x: ``(N, F)`` float node features.
        y: ``(N,)`` int64 class labels.
        splits: ``{"train", "val", "test"}`` -> int64 node indices.
        num_classes: number of classes.
    """

    name: str
    graph: Graph
    x: Tensor
    y: Tensor
    splits: dict
    num_classes: int
    task: str = "node-cls"

    def __post_init__(self):
        # Row-major features: readers may hand back column-major arrays (pandas does), and
        # every row-wise kernel downstream (fused fake quantization, gathers) wants rows.
        self.x = self.x.contiguous()

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    def to(self, device) -> "NodeDataset":
        return NodeDataset(
            self.name,
            self.graph.to(device),
            self.x.to(device),
            self.y.to(device),
            {k: v.to(device) for k, v in self.splits.items()},
            self.num_classes,
            self.task,
        )

    def statistics(self) -> dict:
        return {
            "name": self.name,
            "nodes": self.graph.num_nodes,
            "edges": self.graph.num_edges,
            "features": self.num_features,
            "classes": self.num_classes,
            **{f"{k}_nodes": int(v.numel()) for k, v in self.splits.items()},
        }


@dataclass
class GraphSample:
    """One small graph of a :class:`GraphDataset`.

    Attributes:
        graph: the :class:`Graph` (``n`` nodes, ``e`` edges).
        x: ``(n, F)`` float features, or ``(n,)`` int64 categorical node labels.
        y: the target: ``()`` int64 class or ``(T,)`` float regression targets.
        edge_attr: optional ``(e,)`` int64 edge labels or ``(e, D)`` floats, CSR order.
    """

    graph: Graph
    x: Tensor
    y: Tensor
    edge_attr: Optional[Tensor] = None


@dataclass
class GraphDataset:
    """Many small graphs with a graph-level target.

    ``splits`` holds fixed ``train``/``val``/``test`` index tensors where the dataset has
    them; datasets evaluated by cross-validation leave it empty and the driver makes folds.
    """

    name: str
    samples: list
    task: str  # "graph-cls" or "graph-reg"
    num_classes: Optional[int] = None
    num_node_types: Optional[int] = None  # categorical node labels: vocabulary size
    num_edge_types: Optional[int] = None
    splits: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> GraphSample:
        return self.samples[i]

    @property
    def labels(self) -> Tensor:
        return torch.stack([s.y for s in self.samples])

    def statistics(self) -> dict:
        nodes = torch.tensor([s.graph.num_nodes for s in self.samples], dtype=torch.float64)
        edges = torch.tensor([s.graph.num_edges for s in self.samples], dtype=torch.float64)
        stats = {
            "name": self.name,
            "graphs": len(self),
            "avg_nodes": float(nodes.mean()),
            "avg_edges": float(edges.mean()),
        }
        if self.task == "graph-cls":
            counts = torch.bincount(self.labels.long().flatten(), minlength=self.num_classes or 0)
            stats["class_counts"] = counts.tolist()
        stats.update({f"{k}_graphs": int(v.numel()) for k, v in self.splits.items()})
        return stats


def collate(samples: Sequence[GraphSample]):
    """Batch samples into ``(graph, x, edge_attr, y)``; ``graph.graph_ids`` maps nodes to graphs."""
    graph = Graph.batch([s.graph for s in samples])
    x = torch.cat([s.x for s in samples])
    edge_attr = None
    if samples[0].edge_attr is not None:
        edge_attr = torch.cat([s.edge_attr for s in samples])
    y = torch.stack([s.y for s in samples])
    return graph, x, edge_attr, y
