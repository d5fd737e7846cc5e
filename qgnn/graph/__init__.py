"""Graph type and aggregation ops; ``DGLGraph`` inputs run through DGL's built-ins."""

from qgnn.graph.graph import Graph, symmetrize
from qgnn.graph.ops import aggregate, edge_scores, edge_softmax, gcn_norm, is_dgl_graph, readout


def to_dgl(graph):
    """Convert a qgnn :class:`Graph` to a ``dgl.DGLGraph`` (needs DGL)."""
    from qgnn.graph.dgl_backend import to_dgl as _to_dgl

    return _to_dgl(graph)


def from_dgl(g, weight_key=None):
    """Convert a ``dgl.DGLGraph`` to a qgnn :class:`Graph` (needs DGL)."""
    from qgnn.graph.dgl_backend import from_dgl as _from_dgl

    return _from_dgl(g, weight_key)


__all__ = [
    "Graph",
    "symmetrize",
    "aggregate",
    "edge_scores",
    "edge_softmax",
    "gcn_norm",
    "readout",
    "is_dgl_graph",
    "to_dgl",
    "from_dgl",
]
