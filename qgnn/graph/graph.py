"""A small torch-native graph type: CSR by destination.

Message passing in qgnn reads a node's *in*-edges, so the graph is stored as a CSR matrix
whose rows are destination nodes: the sources of node ``i`` are
``indices[indptr[i]:indptr[i + 1]]``. Every per-edge tensor (weights, attention) is in
this CSR order. One code path serves CPU and CUDA: :meth:`Graph.to` moves it.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Optional, Sequence

import torch

from qgnn.errors import GraphError

Tensor = torch.Tensor


def _as_index(name: str, value) -> Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 1:
        raise GraphError(f"{name} must be a 1-D tensor of node ids, got shape {tuple(t.shape)}.")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise GraphError(f"{name} must hold integer node ids, got dtype {t.dtype}.")
    return t.long()


class Graph:
    """A directed graph stored as CSR by destination, optionally a batch of graphs.

    Args:
        indptr: ``(N + 1,)`` int64 row pointer over destination nodes.
        indices: ``(E,)`` int64 source node of each edge, grouped by destination.
        num_nodes: ``N``.
        edge_weight: optional ``(E,)`` float weight of each edge, in CSR order.
        graph_ids: optional ``(N,)`` int64 id of the graph each node belongs to, for a
            batch of small graphs (see :meth:`batch`); ``None`` means one graph.
        num_graphs: number of graphs in the batch (1 when ``graph_ids`` is ``None``).

    Build graphs with :meth:`from_edges`, which validates and sorts; the constructor
    trusts its arguments.

    Example::

        >>> g = Graph.from_edges([0, 1, 2], [1, 2, 0], num_nodes=3)
        >>> g.in_degrees()
        tensor([1, 1, 1])
    """

    def __init__(
        self,
        indptr: Tensor,
        indices: Tensor,
        num_nodes: int,
        edge_weight: Optional[Tensor] = None,
        graph_ids: Optional[Tensor] = None,
        num_graphs: int = 1,
    ):
        self.indptr = indptr
        self.indices = indices
        self.num_nodes = int(num_nodes)
        self.edge_weight = edge_weight
        self.graph_ids = graph_ids
        self.num_graphs = int(num_graphs)
        self._cache: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        src,
        dst,
        num_nodes: Optional[int] = None,
        edge_weight=None,
        graph_ids=None,
        num_graphs: Optional[int] = None,
    ) -> "Graph":
        """Build a graph from an edge list ``src[e] -> dst[e]``, checking it once.

        Edges are reordered by destination (stably, so the sources of one node keep
        their input order); ``edge_weight`` is permuted with them. Repeated edges and
        self-loops are kept as given.
        """
        src = _as_index("src", src)
        dst = _as_index("dst", dst)
        if src.numel() != dst.numel():
            raise GraphError(
                f"src and dst must have the same length, got {src.numel()} and {dst.numel()}."
            )
        if num_nodes is None:
            num_nodes = int(max(src.max().item(), dst.max().item())) + 1 if src.numel() else 0
        num_nodes = int(num_nodes)
        if num_nodes < 0:
            raise GraphError(f"num_nodes must be non-negative, got {num_nodes}.")
        for name, ids in (("src", src), ("dst", dst)):
            if ids.numel() and (ids.min().item() < 0 or ids.max().item() >= num_nodes):
                bad = ids[(ids < 0) | (ids >= num_nodes)][0].item()
                raise GraphError(
                    f"{name} holds node id {bad}, outside [0, {num_nodes}): every edge "
                    f"endpoint must be a node id below num_nodes={num_nodes}. Pass the right "
                    "num_nodes or drop the offending edges."
                )
        if edge_weight is not None:
            edge_weight = torch.as_tensor(edge_weight)
            if edge_weight.dim() != 1 or edge_weight.numel() != src.numel():
                raise GraphError(
                    f"edge_weight must have shape ({src.numel()},) to match the edges, "
                    f"got {tuple(edge_weight.shape)}."
                )
            if not edge_weight.is_floating_point():
                edge_weight = edge_weight.float()
            if not torch.isfinite(edge_weight).all():
                raise GraphError("edge_weight holds NaN or infinite values.")
        if graph_ids is not None:
            graph_ids = _as_index("graph_ids", graph_ids)
            if graph_ids.numel() != num_nodes:
                raise GraphError(
                    f"graph_ids must give one graph id per node ({num_nodes}), "
                    f"got {graph_ids.numel()}."
                )
            if num_graphs is None:
                num_graphs = int(graph_ids.max().item()) + 1 if graph_ids.numel() else 0
        dst_sorted, perm = torch.sort(dst, stable=True)
        indices = src[perm]
        counts = torch.bincount(dst_sorted, minlength=num_nodes)
        indptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=src.device)
        indptr[1:] = torch.cumsum(counts, 0)
        weight = edge_weight[perm] if edge_weight is not None else None
        return cls(indptr, indices, num_nodes, weight, graph_ids, num_graphs or 1)

    @classmethod
    def batch(cls, graphs: Sequence["Graph"]) -> "Graph":
        """Join graphs into one disconnected graph; ``graph_ids[v]`` says where ``v`` came from."""
        graphs = list(graphs)
        if not graphs:
            raise GraphError("Graph.batch needs at least one graph.")
        if any(g.graph_ids is not None and g.num_graphs != 1 for g in graphs):
            raise GraphError("Graph.batch takes single graphs, not batches.")
        weighted = [g.edge_weight is not None for g in graphs]
        if any(weighted) and not all(weighted):
            raise GraphError("Graph.batch needs edge weights on all graphs or on none.")
        device = graphs[0].indptr.device
        offsets = torch.tensor([0] + [g.num_nodes for g in graphs], device=device).cumsum(0)
        edge_offsets = torch.tensor([0] + [g.num_edges for g in graphs], device=device).cumsum(0)
        indptr = torch.cat(
            [graphs[0].indptr[:1]] + [g.indptr[1:] + edge_offsets[i] for i, g in enumerate(graphs)]
        )
        indices = torch.cat([g.indices + offsets[i] for i, g in enumerate(graphs)])
        weight = torch.cat([g.edge_weight for g in graphs]) if all(weighted) else None
        sizes = torch.tensor([g.num_nodes for g in graphs], device=device)
        graph_ids = torch.repeat_interleave(torch.arange(len(graphs), device=device), sizes)
        return cls(indptr, indices, int(offsets[-1]), weight, graph_ids, len(graphs))

    # ------------------------------------------------------------------ basic facts
    @property
    def num_edges(self) -> int:
        return int(self.indices.numel())

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    def dst(self) -> Tensor:
        """``(E,)`` destination node of each edge, in CSR order."""
        if "dst" not in self._cache:
            self._cache["dst"] = torch.repeat_interleave(
                torch.arange(self.num_nodes, device=self.device), self.in_degrees()
            )
        return self._cache["dst"]

    def edges(self) -> tuple[Tensor, Tensor]:
        """``(src, dst)``, each ``(E,)``, in CSR order."""
        return self.indices, self.dst()

    def in_degrees(self) -> Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def out_degrees(self) -> Tensor:
        return torch.bincount(self.indices, minlength=self.num_nodes)

    def to(self, device) -> "Graph":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Graph(
            self.indptr.to(device),
            self.indices.to(device),
            self.num_nodes,
            move(self.edge_weight),
            move(self.graph_ids),
            self.num_graphs,
        )

    def with_edge_weight(self, edge_weight: Optional[Tensor]) -> "Graph":
        """The same structure with other ``(E,)`` edge weights (CSR order)."""
        if edge_weight is not None and edge_weight.shape[0] != self.num_edges:
            raise GraphError(
                f"edge_weight has {edge_weight.shape[0]} entries for {self.num_edges} edges."
            )
        g = Graph(self.indptr, self.indices, self.num_nodes, edge_weight, self.graph_ids, self.num_graphs)
        if "dst" in self._cache:
            g._cache["dst"] = self._cache["dst"]
        return g

    # ------------------------------------------------------------------ transforms
    def _rebuild(self, src: Tensor, dst: Tensor, weight: Optional[Tensor]) -> "Graph":
        return Graph.from_edges(
            src, dst, self.num_nodes, weight, self.graph_ids, self.num_graphs
        )

    def remove_self_loops(self) -> "Graph":
        src, dst = self.edges()
        keep = src != dst
        w = self.edge_weight[keep] if self.edge_weight is not None else None
        return self._rebuild(src[keep], dst[keep], w)

    def add_self_loops(self, fill_value: float = 1.0) -> "Graph":
        """Append one self-loop per node (weight ``fill_value`` if the graph is weighted)."""
        src, dst = self.edges()
        loop = torch.arange(self.num_nodes, device=self.device)
        w = None
        if self.edge_weight is not None:
            w = torch.cat([self.edge_weight, self.edge_weight.new_full((self.num_nodes,), fill_value)])
        return self._rebuild(torch.cat([src, loop]), torch.cat([dst, loop]), w)

    def reverse(self) -> "Graph":
        """The transposed graph (every edge flipped), weights carried along."""
        src, dst = self.edges()
        return self._rebuild(dst, src, self.edge_weight)

    def gcn_norm(self, add_self_loops: bool = True) -> "Graph":
        """``D^-1/2 (A [+ I]) D^-1/2`` as edge weights, with ``D`` the weighted in-degree.

        Cached on this graph, since a layer asks for it on every forward pass.
        """
        key = ("gcn_norm", add_self_loops)
        if key not in self._cache:
            g = self.add_self_loops() if add_self_loops else self
            w = g.edge_weight if g.edge_weight is not None else torch.ones(g.num_edges, device=g.device)
            src, dst = g.edges()
            deg = torch.zeros(g.num_nodes, device=g.device, dtype=w.dtype).index_add_(0, dst, w)
            inv_sqrt = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
            self._cache[key] = g.with_edge_weight(inv_sqrt[src] * w * inv_sqrt[dst])
        return self._cache[key]

    def adjacency(self) -> Tensor:
        """The ``(N, N)`` sparse CSR adjacency (rows = destinations), values = edge weights."""
        if "adj" not in self._cache:
            values = self.edge_weight
            if values is None:
                values = torch.ones(self.num_edges, device=self.device)
            self._cache["adj"] = sparse_csr(self.indptr, self.indices, values, self.num_nodes)
        return self._cache["adj"]

    def __repr__(self) -> str:
        batch = f", num_graphs={self.num_graphs}" if self.graph_ids is not None else ""
        weighted = ", weighted" if self.edge_weight is not None else ""
        return (
            f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}{batch}{weighted}, "
            f"device={self.device})"
        )


def sparse_csr(indptr: Tensor, indices: Tensor, values: Tensor, num_nodes: int) -> Tensor:
    """A constant ``(N, N)`` torch sparse CSR tensor (values detached)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            indptr, indices, values.detach(), (num_nodes, num_nodes), check_invariants=False
        )


def symmetrize(src: Iterable[int], dst: Iterable[int]) -> tuple[Tensor, Tensor]:
    """Edges in both directions, duplicates removed (self-loops kept once)."""
    src, dst = torch.as_tensor(src).long(), torch.as_tensor(dst).long()
    both = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    both = torch.unique(both, dim=1)
    return both[0], both[1]
