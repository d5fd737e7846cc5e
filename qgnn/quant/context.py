"""Per-forward graph context shared by the quantizers of one model.

A layer hands its quantizers only tensors. Degree-Quant needs to know, for the rows of a
tensor, which nodes are protected in this forward pass; A2Q needs nothing but the row count.
A :class:`QuantContext` is filled by a forward pre-hook on the model (installed by
``framework.attach``) with the graph of the current call and, while training with
Degree-Quant, one protective mask sampled for the whole pass; every quantizer of the model
reads the same mask.

Edge tensors (GCN edge weights, GAT logits / attention) are indexed by edge, in the order of
the graph the layer uses, which may carry self-loops the layer added itself. Their mask is
the mask of each edge's *source* node (a message takes its source node's mask, DESIGN §3),
found from ``ops.edges`` of the model's graph or of that graph with self-loops, whichever
has as many edges as the tensor has rows.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from qgnn.graph import ops

Tensor = torch.Tensor


def degree_cdf(in_degrees: Tensor) -> Tensor:
    """Empirical CDF of the in-degree over the graph's nodes: ``#{j : d_j <= d_i} / N``.

    Shapes: ``(N,)`` integer degrees -> ``(N,)`` float in ``(0, 1]``.
    """
    n = in_degrees.numel()
    if n == 0:
        return torch.zeros(0, device=in_degrees.device)
    ordered, _ = torch.sort(in_degrees)
    below_or_equal = torch.searchsorted(ordered, in_degrees, right=True)
    return below_or_equal.float() / n


def protection_probability(in_degrees: Tensor, p_low: float, change: float) -> Tensor:
    """Degree-Quant's ``p_i = p_low + change * CDF(in_degree_i)``, clipped to ``[0, 1]``."""
    return (p_low + change * degree_cdf(in_degrees)).clamp(0.0, 1.0)


def sample_protective_mask(in_degrees: Tensor, p_low: float, change: float,
                           generator: Optional[torch.Generator] = None) -> Tensor:
    """``(N,)`` bool: node ``i`` is protected (kept in full precision) with probability ``p_i``."""
    p = protection_probability(in_degrees, p_low, change)
    return torch.rand(p.shape, generator=generator, device=p.device) < p


class QuantContext:
    """What the quantizers of one model know about the current forward pass.

    Attributes:
        graph: the graph passed to the model (``Graph`` or ``DGLGraph``), or ``None``.
        num_nodes: its node count.
        node_mask: ``(N,)`` bool protective mask of this pass, or ``None`` (evaluation,
            or no masking configured).
        mask_sampler: ``graph -> (N,) bool`` called once per training pass, or ``None``.
        mask_edges: derive edge masks from source nodes (``True``) or leave edges unmasked.

    Users of a quantizer on plain tensors may call :meth:`set_mask` directly.
    """

    def __init__(self, mask_sampler: Optional[Callable] = None, mask_edges: bool = True):
        self.mask_sampler = mask_sampler
        self.mask_edges = mask_edges
        self.graph = None
        self.num_nodes: Optional[int] = None
        self.node_mask: Optional[Tensor] = None
        self._edge_masks: dict[int, Tensor] = {}

    def begin_forward(self, graph, training: bool) -> None:
        """Record the graph of this pass and, when training, sample its protective mask."""
        self.graph = graph
        self.num_nodes = ops.num_nodes(graph) if graph is not None else None
        self._edge_masks = {}
        self.node_mask = None
        if training and self.mask_sampler is not None and graph is not None:
            self.node_mask = self.mask_sampler(graph)

    def set_mask(self, node_mask: Optional[Tensor], graph=None) -> None:
        """Set the protective mask by hand (``None`` clears it)."""
        self.graph = graph
        self.num_nodes = None if node_mask is None else int(node_mask.shape[0])
        self.node_mask = node_mask
        self._edge_masks = {}

    def mask_for(self, kind: str, rows: int) -> Optional[Tensor]:
        """The ``(rows,)`` bool mask for a tensor of site ``kind`` (``"node"`` or ``"edge"``)."""
        if self.node_mask is None or kind == "weight":
            return None
        if kind == "node":
            if rows != self.node_mask.shape[0]:
                raise ValueError(
                    f"a node tensor has {rows} rows but the protective mask covers "
                    f"{self.node_mask.shape[0]} nodes; call the model with the graph the "
                    "features belong to."
                )
            return self.node_mask
        if kind == "edge":
            return self._edge_mask(rows) if self.mask_edges else None
        raise ValueError(f"site kind must be 'node', 'edge' or 'weight', got {kind!r}.")

    def _edge_mask(self, rows: int) -> Tensor:
        if rows in self._edge_masks:
            return self._edge_masks[rows]
        if self.graph is None:
            raise ValueError("an edge mask needs the graph; set it with set_mask(mask, graph).")
        candidates = [self.graph]
        if rows != ops.num_edges(self.graph):
            candidates.append(ops.add_self_loops(self.graph))
        for g in candidates:
            if ops.num_edges(g) == rows:
                src, _ = ops.edges(g)
                mask = self.node_mask.index_select(0, src.to(self.node_mask.device))
                self._edge_masks[rows] = mask
                return mask
        raise ValueError(
            f"an edge tensor has {rows} rows, which matches neither the graph's "
            f"{ops.num_edges(self.graph)} edges nor its edges with self-loops."
        )
