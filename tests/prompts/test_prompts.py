"""GPF, GPF-plus and LoRAP: identity at start, gradients, shapes, errors, parameter counts."""

import pytest
import torch

from qgnn.graph import Graph
from qgnn.nn import NodeClassifier
from qgnn.prompts import GPF, GPFPlus, LoRAP, PromptConfig, attach_prompts, prompt_report


def test_lorap_starts_as_exact_identity_and_v_gets_gradients():
    head = LoRAP(16, k=40, rank=2)
    s = torch.randn(50, 16, requires_grad=True)
    out = head(s)
    assert torch.equal(out, s)  # V = 0: not just close, identical
    (out * torch.randn_like(out)).sum().backward()
    assert head.V.grad is not None and head.V.grad.abs().sum() > 0
    # With V = 0 the scorer and U get no gradient yet; s gets the identity's.
    assert torch.count_nonzero(head.U.grad) == 0


def test_lorap_matches_formula_in_float64():
    torch.manual_seed(0)
    head = LoRAP(12, k=5, rank=3).double()
    torch.nn.init.normal_(head.V)
    s = torch.randn(7, 12, dtype=torch.float64)
    alpha = torch.softmax(s @ head.score.weight.T + head.score.bias, dim=-1)
    expected = s + alpha @ (head.U @ head.V)
    torch.testing.assert_close(head(s), expected)


def test_lorap_layer_input_scorer():
    head = LoRAP(6, k=4, rank=2, scorer_input="layer_input", score_dim=10)
    torch.nn.init.normal_(head.V)
    s, x = torch.randn(3, 6), torch.randn(3, 10)
    alpha = torch.softmax(head.score(x), -1)
    torch.testing.assert_close(head(s, x), s + alpha @ head.U @ head.V)
    with pytest.raises(ValueError, match="pass layer_input"):
        head(s)


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k must be a positive integer"),
    ({"rank": -1}, "rank must be a positive integer"),
    ({"k": 2.5}, "k must be a positive integer"),
    ({"scorer_input": "nodes"}, "scorer_input must be one of"),
    ({"scorer_input": "layer_input"}, "needs score_dim"),
])
def test_lorap_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRAP(8, **kwargs)


@pytest.mark.parametrize("d,k,r,d_in", [(16, 40, 2, None), (7, 3, 1, None), (8, 5, 4, 20)])
def test_lorap_parameter_count_formula(d, k, r, d_in):
    head = LoRAP(d, k, r, "layer_input" if d_in else "aggregated", score_dim=d_in)
    score_dim = d_in or d
    assert sum(p.numel() for p in head.parameters()) == score_dim * k + k + k * r + r * d


def test_gpf_and_gpf_plus():
    x = torch.randn(9, 5)
    gpf = GPF(5)
    torch.testing.assert_close(gpf(x) - x, gpf.prompt.expand(9, 5))
    plus = GPFPlus(5, k=3)
    w = plus.weights(x)
    torch.testing.assert_close(w.sum(1), torch.ones(9))
    torch.testing.assert_close(plus(x), x + w @ plus.bases)
    assert sum(p.numel() for p in plus.parameters()) == 3 * 5 + 5 * 3 + 3
    with pytest.raises(ValueError, match="k must be a positive integer"):
        GPFPlus(5, k=0)


@pytest.mark.parametrize("arch", ["gcn", "gin", "gat"])
@pytest.mark.parametrize("node,aggregation", [("gpf", "none"), ("gpf_plus", "none"), ("none", "lorap"), ("gpf_plus", "lorap")])
def test_attach_to_every_architecture(arch, node, aggregation):
    torch.manual_seed(0)
    g = Graph.from_edges(torch.randint(0, 20, (60,)), torch.randint(0, 20, (60,)), 20)
    x = torch.randn(20, 8)
    model = NodeClassifier(arch, 8, 16, 3, heads=4).eval()
    before = model(g, x)
    attach_prompts(model, PromptConfig(node=node, aggregation=aggregation))
    after = model(g, x)
    if node == "none":  # LoRAP alone starts as the identity
        torch.testing.assert_close(after, before)
    after.sum().backward()
    report = prompt_report(model, 20)
    prompt_params = [p for n, p in model.named_parameters() if "prompt" in n]
    assert report["prompt_parameters"] == sum(p.numel() for p in prompt_params) > 0
    assert all(p.dtype == torch.float32 for p in prompt_params)


def test_shared_heads_are_one_module():
    model = NodeClassifier("gcn", 16, 16, 16, num_layers=3)
    attach_prompts(model, PromptConfig(aggregation="lorap", shared=True))
    heads = {id(c.agg_prompt) for c in model.convs}
    assert len(heads) == 1
    per_layer = NodeClassifier("gcn", 16, 16, 16, num_layers=3)
    attach_prompts(per_layer, PromptConfig(aggregation="lorap"))
    assert len({id(c.agg_prompt) for c in per_layer.convs}) == 3


def test_config_label():
    assert PromptConfig(node="gpf_plus", aggregation="lorap").label == "gpf_lorap"
    assert PromptConfig().label == "none"
    assert PromptConfig(aggregation="lorap").label == "lorap"


def test_node_prompts_start_at_zero_and_get_their_own_learning_rate():
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import make_optimizer
    from qgnn.nn import NodeClassifier
    from qgnn.prompts import GPF, GPFPlus, PromptConfig, attach_prompts

    x = torch.rand(5, 6)
    assert torch.equal(GPF(6)(x), x) and torch.equal(GPFPlus(6, 3)(x), x)  # unprompted at init
    cfg = load_config(None, ["prompt.node=gpf_plus", "prompt.node_lr=0.002", "train.lr=0.01"])
    model = NodeClassifier("gcn", 6, 8, 3)
    attach_prompts(model, cfg.prompt)
    groups = make_optimizer(cfg, model).param_groups
    prompt_group = next(g for g in groups if g["lr"] == 0.002)
    prompt_ids = {id(p) for m in model.modules() if isinstance(m, GPFPlus) for p in m.parameters()}
    assert {id(p) for p in prompt_group["params"]} == prompt_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert PromptConfig().node_lr == 1e-3
