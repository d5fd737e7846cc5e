"""MixQ: relaxed search, memory term, selection of the most likely width, fixed-width retraining."""

import math

import pytest
import torch

from qgnn.errors import ConfigError

from qgnn.graph import to_dgl
from qgnn.nn import NodeClassifier
from qgnn.quant import FakeQuantize, MaskedQuantizer, MixedQuantizer, QuantConfig, build_quantization, size_report
from qgnn.quant.mixq import BITS_PER_KB


def _attach(cfg_dict, graph, features, arch="gcn"):
    torch.manual_seed(0)
    model = NodeClassifier(arch, 7, 16, 3, heads=2, dropout=0.0)
    framework = build_quantization(QuantConfig.from_dict(cfg_dict))
    framework.attach(model, example=(graph, features))
    return model, framework


def test_penalty_is_lambda_times_expected_memory(graph, features):
    model, framework = _attach(
        {"method": "mixq", "mixq": {"memory_weight": 0.5, "logit_lr": 0.25, "logit_init": "uniform"}},
        graph, features)
    model.train()
    model(graph, features)
    expected_kb = 0.0
    last_output = model.convs[-1].quant["output"]
    assert last_output.candidate_bits == (8,)  # the logits are not searched
    expected_kb += 8 * int(last_output.observed_numel) / BITS_PER_KB
    searched = [q for conv in model.convs for q in conv.quant.values() if q is not last_output]
    for q in searched:
        assert isinstance(q, MixedQuantizer) and q.candidate_bits == (2, 4, 8)
        expected_kb += (14 / 3) * int(q.observed_numel) / BITS_PER_KB  # uniform logits
    assert framework.penalty(model).item() == pytest.approx(0.5 * expected_kb, rel=1e-5)
    framework.penalty(model).backward()
    for q in searched:
        # d penalty / d logit_k = lambda * numel / 8192 * p_k (bits_k - E[bits]), p_k = 1/3,
        # applied at once as a plain SGD step (no gradient left for the model's optimizer)
        scale = 0.5 * int(q.observed_numel) / BITS_PER_KB / 3
        grad = torch.tensor([2 - 14 / 3, 4 - 14 / 3, 8 - 14 / 3]) * scale
        assert q.logits.grad is None
        torch.testing.assert_close(q.logits.detach(), -0.25 * grad, rtol=1e-5, atol=1e-8)


def test_bits_logit_init_tilts_towards_the_widest_width():
    # the MixQ reference code's start: logits = softmax(softmax(bits))
    e = [math.exp(b) for b in (2, 4, 8)]
    first = [x / sum(e) for x in e]
    e = [math.exp(x) for x in first]
    logits = [x / sum(e) for x in e]
    e = [math.exp(x) for x in logits]
    weights = [x / sum(e) for x in e]
    q = MixedQuantizer([FakeQuantize(bits=b) for b in (2, 4, 8)], logit_init="bits")
    torch.testing.assert_close(q.logits.detach(), torch.tensor(logits))
    torch.testing.assert_close(q.probabilities().detach(), torch.tensor(weights))
    assert weights[2] == pytest.approx(0.416, abs=1e-3) and weights[0] == pytest.approx(0.292, abs=1e-3)
    q(torch.randn(5, 3))
    assert q.expected_bits.item() == pytest.approx(2 * weights[0] + 4 * weights[1] + 8 * weights[2])
    assert q.select() == 8  # a component the search never moves keeps the widest width
    with pytest.raises(ValueError, match="logit_init"):
        MixedQuantizer([FakeQuantize(bits=2)], logit_init="wide")


def test_logit_init_reaches_every_component(graph, features):
    model, _ = _attach({"method": "mixq", "mixq": {"logit_init": "bits"}}, graph, features)
    searched = [q for conv in model.convs for q in conv.quant.values()
                if isinstance(q, MixedQuantizer) and len(q.candidate_bits) > 1]
    assert searched and all(int(q.logits.argmax()) == 2 for q in searched)
    with pytest.raises(ConfigError, match="quant.mixq.logit_init"):
        QuantConfig.from_dict({"method": "mixq", "mixq": {"logit_init": "wide"}})


def test_search_lowers_expected_bits(graph, features):
    model, framework = _attach({"method": "mixq", "mixq": {"memory_weight": 1.0}}, graph, features)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)  # the logits step on their own
    model.train()
    first = None
    for _ in range(10):
        optimizer.zero_grad()
        loss = model(graph, features).pow(2).mean() + framework.penalty(model)
        first = first if first is not None else framework.expected_memory_kb(model).item()
        loss.backward()
        optimizer.step()
    model(graph, features)
    assert framework.expected_memory_kb(model).item() < first


def test_selection_keeps_the_most_likely_width_and_retraining_uses_it(graph, features):
    model, framework = _attach({"method": "mixq", "mixq": {"search_epochs": 2}}, graph, features)
    wanted = {}
    for i, conv in enumerate(model.convs):
        for j, (site, q) in enumerate(conv.quant.items()):
            if len(q.candidate_bits) == 1:  # the last layer's output: fixed at the widest
                wanted[(i, site)] = 8
                continue
            choice = (i + j) % 3
            with torch.no_grad():
                q.logits.copy_(torch.nn.functional.one_hot(torch.tensor(choice), 3).float())
            wanted[(i, site)] = (2, 4, 8)[choice]
    model.train()
    model(graph, features)
    assert framework.phase(model) == "search"
    assert framework.on_epoch_end(model, 0) is False
    assert framework.on_epoch_end(model, 1) is True
    assert framework.phase(model) == "retrain"
    assert framework.on_epoch_end(model, 2) is False

    outputs = {}
    for i, conv in enumerate(model.convs):
        for site, q in conv.quant.items():
            assert q.selected_bits == wanted[(i, site)]
            q.register_forward_hook(lambda m, a, y, key=(i, site): outputs.__setitem__(key, y))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(graph, features).sum().backward()
        optimizer.step()
        assert framework.penalty(model).item() == 0.0
    for conv in model.convs:
        for q in conv.quant.values():
            assert q.logits.grad is None or (q.logits.grad == 0).all()  # no longer in play
    model.eval()
    model(graph, features)
    for key, y in outputs.items():
        assert y.unique().numel() <= 2 ** wanted[key], key
    report = size_report(model)
    conv0_weight = next(w for w in report["weights"] if w["name"] == "convs.0.weight")
    assert conv0_weight["bits"] == wanted[(0, "weight")]
    assert framework.summary(model)["bits"]["convs.0.quant.weight"] == wanted[(0, "weight")]


def test_reinit_resets_weights_and_ranges(graph, features):
    model, framework = _attach({"method": "mixq", "mixq": {"search_epochs": 1, "reinit": True}},
                               graph, features)
    model.train()
    model(graph, features)
    before = model.convs[0].weight.detach().clone()
    assert framework.on_epoch_end(model, 0)
    assert not torch.equal(before, model.convs[0].weight)
    q = model.convs[0].quant["weight"]
    assert not bool(q.candidates[int(q.selected)].observer.initialized)


def test_zero_search_epochs_start_fixed(graph, features):
    model, framework = _attach({"method": "mixq", "mixq": {"search_epochs": 0}}, graph, features)
    assert framework.phase(model) == "retrain"


@pytest.mark.parametrize("arch", ["gcn", "gin", "gat"])
def test_mixq_on_degree_quant_parts(arch, graph, features):
    model, framework = _attach(
        {"method": "mixq", "mixq": {"base": "dq", "search_epochs": 1},
         "dq": {"p_low": 0.3, "change": 0.2}}, graph, features, arch)
    q = model.convs[0].quant["input"]
    assert all(isinstance(c, MaskedQuantizer) for c in q.candidates)
    assert q.candidates[0].context is framework.context
    model.train()
    for g in (graph, to_dgl(graph)):
        (model(g, features).sum() + framework.penalty(model)).backward()
    assert framework.context.node_mask is not None
    framework.on_epoch_end(model, 0)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(graph, features), model(to_dgl(graph), features), atol=1e-5)
