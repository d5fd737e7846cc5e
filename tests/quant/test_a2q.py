"""A2Q: parts per site, memory penalty drives bits down, bank for graph tasks, average bits."""

import pytest
import torch

from qgnn.graph import Graph, to_dgl
from qgnn.nn import GraphPredictor, NodeClassifier
from qgnn.quant import LSQQuantizer, NodeWiseQuantizer, QuantConfig, build_quantization
from qgnn.quant.a2q import BITS_PER_KB

from tests.quant.conftest import make_graph


def test_parts_per_site(graph, features):
    model = NodeClassifier("gin", 7, 16, 3)
    build_quantization(QuantConfig(method="a2q")).attach(model, example=(graph, features))
    conv = model.convs[0]
    assert isinstance(conv.quant["input"], NodeWiseQuantizer)
    assert conv.quant["input"].step_size().shape == (24,)
    assert conv.quant["input"].log_step.shape == (24,)  # learned in the log domain by default
    assert conv.quant["input"].node_bits.tolist() == [4.0] * 24
    for site in ("weight1", "weight2"):
        q = conv.quant[site]
        assert isinstance(q, LSQQuantizer) and q.bits == 4 and q.granularity == "per_row"
    assert conv.quant["weight1"].step_size().shape == (16,)
    for site in ("hidden", "output"):
        assert isinstance(conv.quant[site], LSQQuantizer)
        assert conv.quant[site].granularity == "per_column"
    assert isinstance(conv.quant["aggregate"], torch.nn.Identity)


@pytest.mark.parametrize("arch", ["gin", "gcn"])
def test_post_aggregation_per_node_makes_gins_mlp_sites_node_wise(arch, graph, features):
    model = NodeClassifier(arch, 7, 16, 3)
    cfg = QuantConfig.from_dict({"method": "a2q", "a2q": {"post_aggregation": "per_node"}})
    framework = build_quantization(cfg)
    framework.attach(model, example=(graph, features))
    conv = model.convs[0]
    if arch == "gin":
        for site in ("hidden", "output"):
            q = conv.quant[site]
            assert isinstance(q, NodeWiseQuantizer) and q.node_bits.tolist() == [4.0] * 24
        assert len(framework.node_quantizers(model)) == 3 * len(model.convs)  # counted in M
    else:  # GCN's linear output comes before the aggregation: per channel as before
        assert isinstance(conv.quant["feature"], LSQQuantizer)
        assert len(framework.node_quantizers(model)) == len(model.convs)
    model.train()
    model(graph, features).sum().backward()
    assert framework.memory_kb(model) is not None
    with pytest.raises(Exception, match="quant.a2q.post_aggregation"):
        QuantConfig.from_dict({"method": "a2q", "a2q": {"post_aggregation": "per_edge"}})


def test_step_init_reaches_every_fixed_width_quantizer(graph, features):
    model = NodeClassifier("gin", 7, 16, 3)
    cfg = QuantConfig.from_dict({"method": "a2q", "a2q": {"step_init": "lsq"}})
    build_quantization(cfg).attach(model, example=(graph, features))
    lsq = [q for q in model.modules() if isinstance(q, LSQQuantizer)]
    assert lsq and all(q.init == "lsq" for q in lsq)


def test_memory_penalty_hand_computed(graph, features):
    model = NodeClassifier("gcn", 7, 16, 3, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "a2q", "a2q": {"penalty": 2.0, "memory_target_kb": 0.01}}))
    framework.attach(model, example=(graph, features))
    model.train()
    model(graph, features)
    memory = (24 * 7 * 4 + 24 * 16 * 4) / BITS_PER_KB  # two layer inputs at 4 bits
    assert framework.memory_kb(model).item() == pytest.approx(memory)
    assert framework.penalty(model).item() == pytest.approx(2.0 * (memory - 0.01) ** 2)
    assert framework.summary(model)["average_feature_bits"] == pytest.approx(4.0)


def test_bits_fall_under_the_memory_penalty(graph, features):
    torch.manual_seed(0)
    model = NodeClassifier("gcn", 7, 16, 3, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        # a strong penalty: at this toy size M is a fraction of a KB
        {"method": "a2q", "a2q": {"penalty": 1e6, "target_bits": 2.0}}))
    framework.attach(model, example=(graph, features))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    labels = torch.arange(24) % 3
    model.train()
    start = framework.average_bits(model)
    for _ in range(30):
        optimizer.zero_grad()
        out = model(graph, features)
        loss = torch.nn.functional.cross_entropy(out, labels) + framework.penalty(model)
        loss.backward()
        optimizer.step()
    model(graph, features)
    end = framework.average_bits(model)
    assert start == pytest.approx(4.0)
    assert end <= 2.1
    assert framework.memory_kb(model).item() <= 1.05 * framework.memory_target_kb(model)
    assert framework.summary(model)["average_feature_bits"] == pytest.approx(end)


def test_without_penalty_pressure_bits_stay_put(graph, features):
    model = NodeClassifier("gcn", 7, 16, 3, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(
        {"method": "a2q", "a2q": {"target_bits": 8.0}}))
    framework.attach(model, example=(graph, features))
    model.train()
    model(graph, features)
    assert framework.penalty(model).item() == 0.0


@pytest.mark.parametrize("post_aggregation", ["per_channel", "per_node"])
def test_graph_tasks_use_the_bank_and_reach_unseen_nodes(post_aggregation):
    graphs = [make_graph(10 + i, 30, seed=i) for i in range(4)]
    batch = Graph.batch(graphs[:3])
    x = torch.randn(batch.num_nodes, 5)
    torch.manual_seed(0)
    model = GraphPredictor("gin", 5, 16, 2, num_layers=2)
    cfg = QuantConfig.from_dict({"method": "a2q", "a2q": {"post_aggregation": post_aggregation}})
    framework = build_quantization(cfg)
    framework.attach(model, example=(batch, x))
    assert framework.node_mode == "bank"
    q = model.convs[0].quant["input"]
    assert q.mode == "bank" and q.log_step.shape == (1000,)
    hidden = model.convs[0].quant["hidden"]
    assert isinstance(hidden, NodeWiseQuantizer if post_aggregation == "per_node" else LSQQuantizer)
    model.train()
    loss = model(batch, x).pow(2).mean() + framework.penalty(model)
    loss.backward()
    touched = (q.log_step.grad != 0).sum().item()
    assert 0 < touched <= batch.num_nodes
    # unseen graph of another size, on both backends
    model.eval()
    unseen = graphs[3]
    xu = torch.randn(unseen.num_nodes, 5)
    with torch.no_grad():
        a = model(unseen, xu)
        b = model(to_dgl(unseen), xu)
    assert a.shape == (1, 2) and torch.allclose(a, b, atol=1e-5)


def test_per_node_mode_refuses_another_graph(graph, features):
    model = NodeClassifier("gcn", 7, 16, 3)
    build_quantization(QuantConfig(method="a2q")).attach(model, example=(graph, features))
    other = make_graph(30, 60, seed=5)
    with pytest.raises(ValueError, match="bank"):
        model(other, torch.randn(30, 7))
