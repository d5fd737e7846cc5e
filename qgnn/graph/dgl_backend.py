"""The same ops on a ``dgl.DGLGraph``, through DGL's own message-passing built-ins.

Imported lazily by :mod:`qgnn.graph.ops` when a layer receives a ``DGLGraph``; qgnn does
not need DGL otherwise. Per-edge tensors here are in DGL's edge-id order.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

os.environ.setdefault("DGLBACKEND", "pytorch")

try:
    import dgl
    import dgl.function as fn
    from dgl.nn.functional import edge_softmax as _dgl_edge_softmax
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "This needs DGL: install qgnn with the 'dgl' extra (pip install 'qgnn[dgl]')."
    ) from exc

from qgnn.graph.graph import Graph

Tensor = torch.Tensor


def _weight_for(message_like: Tensor, weight: Tensor) -> Tensor:
    # u_mul_e broadcasts (E, *W) against (E, *F) from the right; pad W to F's rank.
    return weight.reshape(weight.shape + (1,) * (message_like.dim() - weight.dim()))


def aggregate(g, x: Tensor, edge_weight: Optional[Tensor], reduce: str) -> Tensor:
    with g.local_scope():
        g.srcdata["h"] = x
        if edge_weight is None:
            message = fn.copy_u("h", "m")
        else:
            g.edata["w"] = _weight_for(x, edge_weight)
            message = fn.u_mul_e("h", "w", "m")
        g.update_all(message, getattr(fn, reduce)("m", "out"))
        return g.dstdata["out"]


def edge_scores(g, src_score: Tensor, dst_score: Tensor) -> Tensor:
    with g.local_scope():
        g.srcdata["el"] = src_score
        g.dstdata["er"] = dst_score
        g.apply_edges(fn.u_add_v("el", "er", "e"))
        return g.edata["e"]


def edge_softmax(g, scores: Tensor) -> Tensor:
    return _dgl_edge_softmax(g, scores)


def readout(g, x: Tensor, reduce: str) -> Tensor:
    with g.local_scope():
        g.ndata["h"] = x
        return dgl.readout_nodes(g, "h", op=reduce)


def gcn_norm(g, add_self_loops: bool):
    if add_self_loops:
        g = dgl.add_self_loop(g)
    src, dst = g.edges()
    w = g.edata["w"] if "w" in g.edata else torch.ones(g.num_edges(), device=g.device)
    deg = torch.zeros(g.num_nodes(), device=g.device, dtype=w.dtype).index_add_(0, dst, w)
    inv_sqrt = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
    return g, inv_sqrt[src] * w * inv_sqrt[dst]


def to_dgl(graph: Graph):
    """A ``DGLGraph`` with the same edges; weights go to ``edata['w']`` (CSR order = edge ids)."""
    src, dst = graph.edges()
    g = dgl.graph((src, dst), num_nodes=graph.num_nodes, device=graph.device)
    if graph.edge_weight is not None:
        g.edata["w"] = graph.edge_weight
    return g


def from_dgl(g, weight_key: Optional[str] = None) -> Graph:
    """A qgnn ``Graph`` from a ``DGLGraph`` (homogeneous); ``weight_key`` names edge weights."""
    src, dst = g.edges()
    weight = g.edata[weight_key] if weight_key else None
    return Graph.from_edges(src, dst, g.num_nodes(), weight)
