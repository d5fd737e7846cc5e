"""Degree-Quant: protection probabilities, one shared mask per pass, edge masks, percentiles."""

import dgl
import pytest
import torch

from qgnn.graph import Graph, to_dgl
from qgnn.nn import NodeClassifier
from qgnn.quant import MaskedQuantizer, PercentileObserver, QuantConfig, build_quantization
from qgnn.quant.context import degree_cdf, protection_probability


def test_protection_probability_hand_computed():
    degrees = torch.tensor([0, 1, 1, 3])
    assert torch.allclose(degree_cdf(degrees), torch.tensor([0.25, 0.75, 0.75, 1.0]))
    p = protection_probability(degrees, p_low=0.1, change=0.1)
    assert torch.allclose(p, torch.tensor([0.125, 0.175, 0.175, 0.2]))


def test_defaults_by_bits():
    assert QuantConfig(method="dq", act_bits=8).dq_protection() == (0.0, 0.1)
    assert QuantConfig(method="dq", act_bits=4).dq_protection() == (0.1, 0.1)
    assert QuantConfig(method="dq", act_bits=8).dq_percentile() == 0.001
    assert QuantConfig(method="dq", act_bits=4).dq_percentile() == 0.01


def test_mask_frequency_follows_p_i():
    # in-degrees 0..9 (node i has i in-edges), so the CDF is (i + 1) / 10
    src, dst = [], []
    for i in range(10):
        src += [(i + k + 1) % 10 for k in range(i)]
        dst += [i] * i
    graph = Graph.from_edges(src, dst, 10)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "dq", "act_bits": 4, "dq": {"p_low": 0.1, "change": 0.5}}))
    torch.manual_seed(0)
    trials = 4000
    counts = torch.zeros(10)
    for _ in range(trials):
        framework.context.begin_forward(graph, training=True)
        counts += framework.context.node_mask.float()
    expected = 0.1 + 0.5 * (torch.arange(10) + 1) / 10
    sigma = (expected * (1 - expected) / trials).sqrt()
    assert ((counts / trials - expected).abs() < 4 * sigma).all()
    framework.context.begin_forward(graph, training=False)
    assert framework.context.node_mask is None


@pytest.mark.parametrize("arch", ["gcn", "gat"])
def test_one_mask_per_pass_shared_by_all_layers_and_protected_rows_pass_unchanged(arch, graph, features):
    torch.manual_seed(0)
    model = NodeClassifier(arch, 7, 16, 3, heads=2, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "dq", "act_bits": 2, "weight_bits": 4, "dq": {"p_low": 0.5, "change": 0.0}}))
    framework.attach(model)
    calls = []

    def spy(module, args, output):
        calls.append((module, framework.context.node_mask, args[0], output))

    for m in model.modules():
        if isinstance(m, MaskedQuantizer):
            m.register_forward_hook(spy)
    model.train()
    model(graph, features).sum().backward()
    masks = {id(mask) for _, mask, _, _ in calls}
    assert len(masks) == 1 and calls[0][1] is not None
    node_mask = calls[0][1]
    src_with_loops = graph.add_self_loops().edges()[0]
    checked_edges = 0
    for module, mask, x, y in calls:
        if module.kind == "node":
            rows = node_mask
        else:
            assert x.shape[0] == src_with_loops.numel()  # GCN/GAT add self-loops
            rows = node_mask[src_with_loops]
            checked_edges += 1
        assert torch.equal(y[rows], x[rows])
    assert checked_edges >= 1

    # a second pass draws a new mask; evaluation masks nothing
    calls.clear()
    model(graph, features)
    assert calls[0][1] is not node_mask
    calls.clear()
    model.eval()
    model(graph, features)
    assert all(mask is None for _, mask, _, _ in calls)


def test_edge_masks_follow_source_nodes_on_dgl_graphs(graph, features):
    torch.manual_seed(0)
    model = NodeClassifier("gat", 7, 8, 3, heads=2, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "dq", "act_bits": 4, "dq": {"p_low": 0.5, "change": 0.0}}))
    framework.attach(model)
    dgl_graph = to_dgl(graph)
    seen = []
    model.convs[0].quant["attention"].register_forward_hook(lambda m, a, y: seen.append((a[0], y)))
    model.train()
    model(dgl_graph, features).sum().backward()
    (x, y), = seen
    src = dgl.add_self_loop(dgl_graph).edges()[0]
    protected = framework.context.node_mask[src]
    assert torch.equal(y[protected], x[protected])
    assert not torch.equal(y[~protected], x[~protected])


def test_edge_mask_none_quantizes_every_edge(graph, features):
    model = NodeClassifier("gat", 7, 8, 3, heads=2, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "dq", "act_bits": 2, "dq": {"p_low": 1.0, "change": 0.0, "edge_mask": "none"}}))
    framework.attach(model)
    seen = []
    model.convs[0].quant["logit"].register_forward_hook(lambda m, a, y: seen.append((a[0], y)))
    model.convs[0].quant["feature"].register_forward_hook(lambda m, a, y: seen.append((a[0], y)))
    model.train()
    model(graph, features)
    (logit_in, logit_out), (feat_in, feat_out) = seen[1], seen[0]
    assert torch.equal(feat_in, feat_out)  # every node protected (p = 1)
    assert logit_out.unique().numel() <= 4 and not torch.equal(logit_in, logit_out)


def test_dq_parts(graph, features):
    model = NodeClassifier("gin", 7, 8, 3, dropout=0.0)
    build_quantization(QuantConfig(method="dq", weight_bits=8, act_bits=8)).attach(model)
    conv = model.convs[0]
    q = conv.quant["aggregate"]
    assert isinstance(q, MaskedQuantizer) and q.quantizer.gradient == "clipped"
    assert isinstance(q.quantizer.observer, PercentileObserver) and q.quantizer.observer.q == 0.001
    assert conv.quant["weight1"].gradient == "clipped" and conv.quant["weight1"].symmetric
