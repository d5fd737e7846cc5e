"""Native aggregation against DGL's update_all (the oracle), forward and gradients."""

import pytest
import torch

dgl = pytest.importorskip("dgl")

from qgnn.graph import Graph, aggregate, edge_scores, edge_softmax, from_dgl, gcn_norm, readout, to_dgl  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def random_graph(seed: int, num_nodes: int = 40, num_edges: int = 160) -> Graph:
    """Random multigraph with repeated edges, self-loops and isolated nodes."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes - 5, (num_edges,), generator=gen)  # last 5 nodes: no out-edges
    dst = torch.randint(0, num_nodes - 3, (num_edges,), generator=gen)  # last 3: no in-edges
    src = torch.cat([src, src[:10], torch.arange(4)])  # repeated edges and self-loops
    dst = torch.cat([dst, dst[:10], torch.arange(4)])
    return Graph.from_edges(src, dst, num_nodes)


def grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*tensors)
    weight = torch.randn_like(out, generator=torch.Generator().manual_seed(123))
    (out * weight).sum().backward()
    return out.detach(), [t.grad for t in tensors]


def assert_same(fn_native, fn_dgl, *tensors):
    out_a, grads_a = grads(fn_native, *tensors)
    out_b, grads_b = grads(fn_dgl, *tensors)
    torch.testing.assert_close(out_a, out_b, rtol=RTOL, atol=ATOL)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_matches_dgl_unweighted(seed, reduce):
    g = random_graph(seed)
    d = to_dgl(g)
    x = torch.randn(g.num_nodes, 7, generator=torch.Generator().manual_seed(seed))
    assert_same(lambda x: aggregate(g, x, reduce=reduce), lambda x: aggregate(d, x, reduce=reduce), x)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_matches_dgl_weighted_with_weight_grad(seed, reduce):
    g = random_graph(seed)
    d = to_dgl(g)  # edge ids of d follow g's CSR order
    gen = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(g.num_nodes, 5, generator=gen)
    w = torch.rand(g.num_edges, generator=gen)
    assert_same(
        lambda x, w: aggregate(g, x, w, reduce), lambda x, w: aggregate(d, x, w, reduce), x, w
    )


def test_weighted_sum_sparse_path_matches_dgl():
    """Constant weights take the sparse CSR matmul path; gradients w.r.t. x must still agree."""
    g = random_graph(3)
    d = to_dgl(g)
    w = torch.rand(g.num_edges)
    x = torch.randn(g.num_nodes, 6)
    assert_same(lambda x: aggregate(g, x, w), lambda x: aggregate(d, x, w), x)


def test_multihead_weights_match_dgl():
    g = random_graph(4)
    d = to_dgl(g)
    x = torch.randn(g.num_nodes, 3, 4)
    w = torch.rand(g.num_edges, 3)
    assert_same(lambda x, w: aggregate(g, x, w), lambda x, w: aggregate(d, x, w), x, w)


@pytest.mark.parametrize("heads", [None, 4])
def test_edge_softmax_and_scores_match_dgl(heads):
    g = random_graph(5)
    d = to_dgl(g)
    shape = (g.num_nodes,) if heads is None else (g.num_nodes, heads)
    el, er = torch.randn(shape), torch.randn(shape)

    def native(el, er):
        return edge_softmax(g, torch.nn.functional.leaky_relu(edge_scores(g, el, er), 0.2))

    def oracle(el, er):
        return edge_softmax(d, torch.nn.functional.leaky_relu(edge_scores(d, el, er), 0.2))

    assert_same(native, oracle, el, er)
    alpha = native(el, er)
    per_node = torch.zeros((g.num_nodes,) + alpha.shape[1:]).index_add_(0, g.dst(), alpha)
    has_in = g.in_degrees() > 0
    torch.testing.assert_close(per_node[has_in], torch.ones_like(per_node[has_in]))


def test_gcn_norm_matches_dgl_graphconv():
    g = random_graph(6)
    d = to_dgl(g)
    x = torch.randn(g.num_nodes, 8)
    g2, w = gcn_norm(g)
    d2, wd = gcn_norm(d)
    out = aggregate(g2, x, w)
    ref = aggregate(d2, x, wd)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    # DGL's GraphConv (norm="both") on a symmetric graph with self-loops is the same operator.
    sym = Graph.from_edges(*torch.cat([torch.stack(g.edges()), torch.stack(g.edges()).flip(0)], 1), g.num_nodes)
    conv = dgl.nn.GraphConv(8, 8, norm="both", weight=False, bias=False, allow_zero_in_degree=True)
    ds = dgl.add_self_loop(to_dgl(sym))
    gs, ws = gcn_norm(sym)
    torch.testing.assert_close(aggregate(gs, x, ws), conv(ds, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_readout_matches_dgl(reduce):
    graphs = [random_graph(s, num_nodes=10 + s, num_edges=30) for s in range(4)]
    batch = Graph.batch(graphs)
    dbatch = dgl.batch([to_dgl(gr) for gr in graphs])
    x = torch.randn(batch.num_nodes, 5)
    assert_same(lambda x: readout(batch, x, reduce), lambda x: readout(dbatch, x, reduce), x)


def test_cora_aggregation_matches_dgl(require_files):
    from qgnn.data import load_dataset

    root = require_files("Cora/raw/ind.cora.graph")
    data = load_dataset("cora", str(root), download=False)
    g = data.graph
    d = to_dgl(g)
    g2, w = gcn_norm(g)
    d2, wd = gcn_norm(d)
    # Random features on Cora's graph: the raw bag-of-words rows tie so often that "max"
    # has many valid subgradients (torch splits ties, DGL picks one).
    x = torch.randn(g.num_nodes, 64, generator=torch.Generator().manual_seed(0))
    for reduce in ("sum", "mean", "max"):
        assert_same(lambda x: aggregate(g, x, reduce=reduce), lambda x: aggregate(d, x, reduce=reduce), x)
    assert_same(lambda x: aggregate(g2, x, w), lambda x: aggregate(d2, x, wd), data.x[:, :64])


def test_dgl_round_trip():
    g = random_graph(7)
    g.edge_weight = torch.rand(g.num_edges)
    back = from_dgl(to_dgl(g), weight_key="w")
    assert torch.equal(back.indptr, g.indptr)
    assert torch.equal(back.indices, g.indices)
    torch.testing.assert_close(back.edge_weight, g.edge_weight)
