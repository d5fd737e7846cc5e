"""Aggregation ops over in-neighbours, for a qgnn :class:`Graph` or a ``dgl.DGLGraph``.

Every op takes the graph first and dispatches on its type: a ``DGLGraph`` runs through
DGL's own ``update_all`` built-ins (:mod:`qgnn.graph.dgl_backend`); a qgnn ``Graph`` runs
on torch (sparse CSR matmul where it applies, gather / ``index_add_`` / ``scatter_reduce``
otherwise), on whatever device the graph lives; on CUDA, weighted sum / mean aggregation of
``(N, d)`` features runs qgnn's Triton CSR kernel (:mod:`qgnn.kernels.aggregate`) unless
``kernel="torch"``. Per-edge tensors are in the graph's own
edge order: CSR order for a ``Graph``, edge-id order for a ``DGLGraph``.

Shapes: node features ``(N, *F)``; edge weights ``(E,)`` or ``(E, H)`` for ``H`` heads
(broadcast against the trailing feature dimensions).
"""

from __future__ import annotations

from typing import Optional

import torch

from qgnn.errors import GraphError
from qgnn.graph.graph import Graph, sparse_csr

Tensor = torch.Tensor
REDUCES = ("sum", "mean", "max")
KERNELS = ("triton", "torch")


def is_dgl_graph(graph) -> bool:
    """True for a ``dgl.DGLGraph``, without importing DGL."""
    return type(graph).__module__.startswith("dgl")


def num_nodes(graph) -> int:
    return graph.num_nodes if isinstance(graph, Graph) else graph.num_nodes()


def num_edges(graph) -> int:
    return graph.num_edges if isinstance(graph, Graph) else graph.num_edges()


def edges(graph) -> tuple[Tensor, Tensor]:
    """``(src, dst)`` in the graph's edge order."""
    return graph.edges() if isinstance(graph, Graph) else graph.edges()


def in_degrees(graph) -> Tensor:
    return graph.in_degrees()


def _check_nodes(graph, x: Tensor) -> None:
    n = num_nodes(graph)
    if x.shape[0] != n:
        raise GraphError(f"node features have {x.shape[0]} rows but the graph has {n} nodes.")


def _broadcast_weight(weight: Tensor, message: Tensor) -> Tensor:
    """Reshape ``(E,)`` / ``(E, H)`` weights to multiply ``(E, *F)`` messages."""
    return weight.reshape(weight.shape + (1,) * (message.dim() - weight.dim()))


def aggregate(graph, x: Tensor, edge_weight: Optional[Tensor] = None, reduce: str = "sum",
              kernel: str = "triton", grid=None) -> Tensor:
    """``out_i = reduce_{j -> i} w_ji * x_j`` over the in-neighbours of each node.

    Args:
        graph: a qgnn ``Graph`` or a ``dgl.DGLGraph``.
        x: ``(N, *F)`` node features.
        edge_weight: optional ``(E,)`` or ``(E, H)`` weights in the graph's edge order;
            ``None`` uses the ``Graph``'s own weights (or none).
        reduce: ``"sum"``, ``"mean"`` or ``"max"``; nodes without in-edges get zeros.
        kernel: ``"triton"``: qgnn's CSR kernel where :func:`uses_triton_kernel` says so;
            ``"torch"``: torch.sparse / index ops everywhere.
        grid: the :class:`~qgnn.kernels.lowbit.CodeGrid` ``x`` lies on (a quantizer's
            output), or ``None``; the Triton kernel then gathers ``x`` as packed low-bit codes.

    Returns:
        ``(N, *F)``.
    """
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}.")
    _check_nodes(graph, x)
    if is_dgl_graph(graph):
        from qgnn.graph import dgl_backend

        return dgl_backend.aggregate(graph, x, edge_weight, reduce)
    if edge_weight is None:
        edge_weight = graph.edge_weight
    if edge_weight is not None and edge_weight.shape[0] != graph.num_edges:
        raise GraphError(f"edge_weight has {edge_weight.shape[0]} entries for {graph.num_edges} edges.")

    if uses_triton_kernel(graph, x, edge_weight, reduce, kernel):
        from qgnn.kernels.aggregate import aggregate_graph

        return aggregate_graph(graph, x, reduce, edge_weight, grid=grid)
    if reduce != "max" and x.dim() == 2 and (edge_weight is None or edge_weight.dim() == 1):
        if edge_weight is None or not edge_weight.requires_grad:
            out = _csr_matmul(graph, x, edge_weight)
            if reduce == "mean":
                out = out / graph.in_degrees().clamp(min=1).unsqueeze(-1).to(out.dtype)
            return out

    src, dst = graph.edges()
    message = x.index_select(0, src)
    if edge_weight is not None:
        message = message * _broadcast_weight(edge_weight, message)
    out_shape = (graph.num_nodes,) + tuple(message.shape[1:])
    if reduce == "max":
        out = message.new_zeros(out_shape)
        index = dst.reshape((-1,) + (1,) * (message.dim() - 1)).expand_as(message)
        return out.scatter_reduce(0, index, message, reduce="amax", include_self=False)
    out = message.new_zeros(out_shape).index_add_(0, dst, message)
    if reduce == "mean":
        deg = graph.in_degrees().clamp(min=1).to(out.dtype)
        out = out / deg.reshape((-1,) + (1,) * (out.dim() - 1))
    return out


def uses_triton_kernel(graph, x: Tensor, edge_weight: Optional[Tensor] = None,
                       reduce: str = "sum", kernel: str = "triton") -> bool:
    """Whether :func:`aggregate` runs the Triton CSR kernel: ``kernel="triton"``, a qgnn
    ``Graph``, a sum or mean of ``(N, d)`` float features with ``(E,)`` weights that need no
    gradient, and the tensors on CUDA (or ``QGNN_FORCE_TRITON=1``)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}.")
    if kernel != "triton" or is_dgl_graph(graph) or reduce == "max":
        return False
    if x.dim() != 2 or not x.is_floating_point():
        return False
    if edge_weight is not None and (edge_weight.dim() != 1 or edge_weight.requires_grad):
        return False
    from qgnn.kernels._common import use_triton

    return use_triton(x, graph.indptr, edge_weight)


def _csr_matmul(graph: Graph, x: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
    """Weighted sum through a sparse CSR matmul (cuSPARSE on CUDA, MKL on CPU)."""
    if edge_weight is None or edge_weight is graph.edge_weight:
        adj = graph.adjacency()
    else:
        adj = sparse_csr(graph.indptr, graph.indices, edge_weight, graph.num_nodes)
    if adj.dtype != x.dtype:
        adj = adj.to(x.dtype)
    return _SpMM.apply(adj, x)


class _SpMM(torch.autograd.Function):
    """``A @ x`` with a constant sparse ``A``; the backward is ``A^T @ grad``."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(adj)
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (adj,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None
        # A^T of a CSR matrix is a CSC view; cuSPARSE/MKL multiply it without a copy.
        return None, torch.sparse.mm(adj.t(), grad)


def edge_scores(graph, src_score: Tensor, dst_score: Tensor) -> Tensor:
    """``e_ji = src_score_j + dst_score_i`` for every edge ``j -> i``: ``(E, *H)``."""
    if is_dgl_graph(graph):
        from qgnn.graph import dgl_backend

        return dgl_backend.edge_scores(graph, src_score, dst_score)
    src, dst = graph.edges()
    return src_score.index_select(0, src) + dst_score.index_select(0, dst)


def edge_softmax(graph, scores: Tensor) -> Tensor:
    """Softmax of ``(E, *H)`` edge scores over the in-edges of each destination node."""
    if is_dgl_graph(graph):
        from qgnn.graph import dgl_backend

        return dgl_backend.edge_softmax(graph, scores)
    _, dst = graph.edges()
    index = dst.reshape((-1,) + (1,) * (scores.dim() - 1)).expand_as(scores)
    shape = (graph.num_nodes,) + tuple(scores.shape[1:])
    # Subtract the per-node max (a constant for the softmax) for numerical safety.
    node_max = scores.new_full(shape, float("-inf")).scatter_reduce(
        0, index, scores.detach(), reduce="amax", include_self=True
    )
    exp = (scores - node_max.index_select(0, dst)).exp()
    denom = scores.new_zeros(shape).index_add_(0, dst, exp)
    return exp / denom.index_select(0, dst)


def readout(graph, x: Tensor, reduce: str = "sum") -> Tensor:
    """Pool ``(N, F)`` node features into ``(num_graphs, F)`` graph features."""
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}.")
    if is_dgl_graph(graph):
        from qgnn.graph import dgl_backend

        return dgl_backend.readout(graph, x, reduce)
    ids = graph.graph_ids
    if ids is None:
        ids = torch.zeros(graph.num_nodes, dtype=torch.long, device=x.device)
    shape = (graph.num_graphs,) + tuple(x.shape[1:])
    if reduce == "max":
        index = ids.reshape((-1,) + (1,) * (x.dim() - 1)).expand_as(x)
        return x.new_zeros(shape).scatter_reduce(0, index, x, reduce="amax", include_self=False)
    out = x.new_zeros(shape).index_add_(0, ids, x)
    if reduce == "mean":
        count = torch.bincount(ids, minlength=graph.num_graphs).clamp(min=1).to(x.dtype)
        out = out / count.reshape((-1,) + (1,) * (x.dim() - 1))
    return out


def gcn_norm(graph, add_self_loops: bool = True):
    """``(graph', w)``: the graph with self-loops (if asked) and GCN weights in its edge order."""
    if is_dgl_graph(graph):
        from qgnn.graph import dgl_backend

        return dgl_backend.gcn_norm(graph, add_self_loops)
    g = graph.gcn_norm(add_self_loops)
    return g, g.edge_weight


def add_self_loops(graph):
    if is_dgl_graph(graph):
        import dgl

        return dgl.add_self_loop(graph)
    if "self_loops" not in graph._cache:  # layers ask on every forward pass
        graph._cache["self_loops"] = graph.add_self_loops()
    return graph._cache["self_loops"]
