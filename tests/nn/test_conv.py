"""Layers: repr, shapes, and the same output for a qgnn Graph and the equivalent DGLGraph."""

import pytest
import torch

from qgnn.graph import Graph
from qgnn.nn import GraphPredictor, NodeClassifier, QGATConv, QGCNConv, QGINConv

dgl = pytest.importorskip("dgl")
from qgnn.graph import to_dgl  # noqa: E402


@pytest.fixture
def graph():
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, 30, (120,), generator=gen)
    dst = torch.randint(0, 30, (120,), generator=gen)
    return Graph.from_edges(src, dst, 32)  # nodes 30, 31 isolated


LAYERS = {
    "gcn": lambda: QGCNConv(8, 6),
    "gin": lambda: QGINConv(8, 6, train_eps=True),
    "gat": lambda: QGATConv(8, 3, heads=2),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_same_on_graph_and_dglgraph(name, graph):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(graph.num_nodes, 8)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(graph, x1)
    ref = layer(to_dgl(graph), x2)
    assert out.shape == (graph.num_nodes, 6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_repr_shows_settings():
    assert "8, 6, normalize=True" in repr(QGCNConv(8, 6))
    assert "heads=2, concat=True" in repr(QGATConv(8, 3, heads=2))
    assert "train_eps=True" in repr(QGINConv(8, 6, train_eps=True))


def test_quant_sites_are_identities_by_default():
    layer = QGATConv(4, 2, heads=2)
    assert set(layer.quant) == set(QGATConv.QUANT_SITES)
    assert all(isinstance(m, torch.nn.Identity) for m in layer.quant.values())


def test_gcn_equals_hand_computed_operator(graph):
    layer = QGCNConv(8, 6)
    x = torch.randn(graph.num_nodes, 8)
    dense = torch.zeros(graph.num_nodes, graph.num_nodes)
    src, dst = graph.edges()
    dense.index_put_((dst, src), torch.ones(src.numel()), accumulate=True)
    dense += torch.eye(graph.num_nodes)
    d = dense.sum(1).pow(-0.5)
    a_hat = d[:, None] * dense * d[None, :]
    expected = a_hat @ (x @ layer.weight.T) + layer.bias
    torch.testing.assert_close(layer(graph, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gcn", "gin", "gat"])
def test_models_run_on_both_graph_types(arch, graph):
    torch.manual_seed(0)
    model = NodeClassifier(arch, 8, 16, 3, heads=4).eval()
    x = torch.randn(graph.num_nodes, 8)
    torch.testing.assert_close(model(graph, x), model(to_dgl(graph), x), rtol=1e-5, atol=1e-5)
    predictor = GraphPredictor(arch, 8, 16, 2, num_layers=2, heads=4).eval()
    batch = Graph.batch([graph, graph])
    xb = torch.randn(batch.num_nodes, 8)
    dbatch = dgl.batch([to_dgl(graph), to_dgl(graph)])
    assert predictor(batch, xb).shape == (2, 2)
    torch.testing.assert_close(predictor(batch, xb), predictor(dbatch, xb), rtol=1e-5, atol=1e-5)


def test_graph_predictor_head_dropout_acts_on_the_pooled_vector(graph):
    # head_dropout=1 zeroes the pooled vector in training: every graph gets head(0); eval keeps it.
    torch.manual_seed(0)
    predictor = GraphPredictor("gin", 8, 16, 2, num_layers=2, head_dropout=1.0)
    batch = Graph.batch([graph, graph])
    xb = torch.randn(batch.num_nodes, 8)
    zero = predictor.head(torch.zeros(1, 16))
    torch.testing.assert_close(predictor.train()(batch, xb), zero.expand(2, 2))
    assert not torch.allclose(predictor.eval()(batch, xb), zero.expand(2, 2))
