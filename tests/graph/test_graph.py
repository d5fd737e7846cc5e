"""The Graph type: construction, validation, transforms, batching."""

import pytest
import torch

from qgnn.errors import GraphError
from qgnn.graph import Graph


def test_csr_by_destination():
    g = Graph.from_edges([0, 2, 1, 2], [1, 0, 2, 1], num_nodes=3)
    assert g.indptr.tolist() == [0, 1, 3, 4]
    assert g.indices.tolist() == [2, 0, 2, 1]  # sources of node 0, node 1 (input order), node 2
    assert g.in_degrees().tolist() == [1, 2, 1]
    assert g.out_degrees().tolist() == [1, 1, 2]
    src, dst = g.edges()
    assert dst.tolist() == [0, 1, 1, 2]


def test_edge_weights_follow_the_reordering():
    g = Graph.from_edges([0, 2, 1], [1, 0, 2], 3, edge_weight=[10.0, 20.0, 30.0])
    assert g.edge_weight.tolist() == [20.0, 10.0, 30.0]


@pytest.mark.parametrize(
    "src,dst,n,match",
    [
        ([0, 5], [1, 2], 3, "node id 5, outside"),
        ([0, -1], [1, 2], 3, "node id -1"),
        ([0, 1], [1], 3, "same length"),
        ([[0, 1]], [[1, 2]], 3, "1-D"),
        ([0.0, 1.0], [1.0, 2.0], 3, "integer"),
    ],
)
def test_malformed_edges_are_rejected(src, dst, n, match):
    with pytest.raises(GraphError, match=match):
        Graph.from_edges(src, dst, n)


def test_bad_edge_weight_rejected():
    with pytest.raises(GraphError, match="edge_weight must have shape"):
        Graph.from_edges([0, 1], [1, 0], 2, edge_weight=[1.0])
    with pytest.raises(GraphError, match="NaN"):
        Graph.from_edges([0, 1], [1, 0], 2, edge_weight=[1.0, float("nan")])


def test_self_loops_and_gcn_norm_by_hand():
    # Path 0 - 1 (both directions) plus isolated node 2.
    g = Graph.from_edges([0, 1], [1, 0], 3)
    loops = g.add_self_loops()
    assert loops.num_edges == 5
    assert loops.remove_self_loops().num_edges == 2
    n = g.gcn_norm()
    # Degrees with self-loops: 2, 2, 1 -> every weight 1/2 except node 2's loop, 1.
    weights = {(int(s), int(d)): round(float(w), 6) for s, d, w in zip(*n.edges(), n.edge_weight)}
    assert weights == {(0, 0): 0.5, (1, 0): 0.5, (0, 1): 0.5, (1, 1): 0.5, (2, 2): 1.0}
    assert g.gcn_norm() is n  # cached


def test_batch_offsets_and_ids():
    a = Graph.from_edges([0], [1], 2)
    b = Graph.from_edges([0, 1, 2], [1, 2, 0], 3)
    batch = Graph.batch([a, b])
    assert batch.num_nodes == 5 and batch.num_graphs == 2
    assert batch.graph_ids.tolist() == [0, 0, 1, 1, 1]
    src, dst = batch.edges()
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (2, 3), (3, 4), (4, 2)]


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_matches_graph_by_graph_offsets(weighted):
    """Random graphs, some without edges or with one node: the batch is each graph's CSR
    shifted by the nodes and edges before it (the per-graph construction, done here)."""
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for i, (n, m) in enumerate([(4, 6), (1, 0), (3, 0), (6, 11), (2, 3), (5, 1)]):
        src, dst = torch.randint(0, n, (m,), generator=gen), torch.randint(0, n, (m,), generator=gen)
        w = torch.rand(m, generator=gen) if weighted else None
        graphs.append(Graph.from_edges(src, dst, n, edge_weight=w))
    batch = Graph.batch(graphs)
    node_off, edge_off, ptr, idx = 0, 0, [0], []
    for g in graphs:
        ptr += (g.indptr[1:] + edge_off).tolist()
        idx += (g.indices + node_off).tolist()
        node_off, edge_off = node_off + g.num_nodes, edge_off + g.num_edges
    assert batch.indptr.tolist() == ptr and batch.indices.tolist() == idx
    assert batch.indptr.dtype == graphs[0].indptr.dtype and batch.indices.dtype == graphs[0].indices.dtype
    assert batch.num_nodes == node_off and batch.num_graphs == len(graphs)
    assert batch.graph_ids.tolist() == sum(([i] * g.num_nodes for i, g in enumerate(graphs)), [])
    if weighted:
        assert torch.equal(batch.edge_weight, torch.cat([g.edge_weight for g in graphs]))


def test_reverse_and_to():
    g = Graph.from_edges([0, 0, 1], [1, 2, 2], 3)
    r = g.reverse()
    assert r.in_degrees().tolist() == g.out_degrees().tolist()
    assert g.to("cpu").indices.tolist() == g.indices.tolist()
