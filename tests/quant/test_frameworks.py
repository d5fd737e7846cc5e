"""Every framework attaches to GCN, GIN and GAT; Graph and DGLGraph agree; state dicts load."""

import io

import pytest
import torch

from qgnn.graph import to_dgl
from qgnn.nn import NodeClassifier
from qgnn.quant import (
    FRAMEWORKS,
    QuantConfig,
    QuantizerBase,
    build_quantization,
    model_parameters,
    quantizer_parameters,
)

METHODS = list(FRAMEWORKS)
ARCHS = ["gcn", "gin", "gat"]


def _config(method: str) -> QuantConfig:
    if method in ("qat", "dq"):
        return QuantConfig(method=method, weight_bits=4, act_bits=4)
    if method == "mixq":
        return QuantConfig.from_dict({"method": "mixq", "mixq": {"search_epochs": 1}})
    return QuantConfig(method=method)


def _model(arch: str) -> NodeClassifier:
    torch.manual_seed(0)
    return NodeClassifier(arch, 7, 16, 3, heads=4, dropout=0.0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_attach_train_and_backends_agree(method, arch, graph, features):
    model = _model(arch)
    framework = build_quantization(_config(method))
    framework.attach(model, example=(graph, features))
    if method != "fp32":
        kinds = {type(m).__name__ for m in model.modules() if isinstance(m, QuantizerBase)}
        assert kinds, "no quantizer installed"
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    dgl_graph = to_dgl(graph)
    model.train()
    for g in (graph, dgl_graph, graph):
        optimizer.zero_grad()
        out = model(g, features)
        loss = torch.nn.functional.cross_entropy(out, torch.arange(24) % 3) + framework.penalty(model)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads)
        optimizer.step()
    if framework.on_epoch_end(model, 0):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.eval()
    with torch.no_grad():
        a = model(graph, features)
        b = model(dgl_graph, features)
    assert a.shape == (24, 3)
    assert torch.allclose(a, b, atol=1e-5)

    # state dict through weights_only=True into a freshly attached model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = _model(arch)
    build_quantization(_config(method)).attach(fresh)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(graph, features), a, atol=1e-6)


def test_fp32_framework_leaves_identities(graph, features):
    model = _model("gcn")
    build_quantization(None).attach(model)
    assert all(isinstance(m, torch.nn.Identity) for conv in model.convs for m in conv.quant.values())


def test_qat_quantizes_every_site_with_the_configured_bits(graph, features):
    model = _model("gat")
    build_quantization(QuantConfig(method="qat", weight_bits=3, act_bits=5)).attach(model)
    model(graph, features)
    for conv in model.convs:
        for site, kind in conv.QUANT_SITES.items():
            q = conv.quant[site]
            assert q.bits == (3 if kind == "weight" else 5)
            assert q.symmetric == (kind == "weight")
            assert q.gradient == "ste" and q.observer.momentum == 0.01


def test_attach_twice_and_models_without_sites_are_refused():
    model = _model("gcn")
    framework = build_quantization(QuantConfig(method="qat"))
    framework.attach(model)
    with pytest.raises(ValueError, match="already has quantizers"):
        build_quantization(QuantConfig(method="qat")).attach(model)
    framework.detach(model)
    assert all(isinstance(m, torch.nn.Identity) for m in model.convs[0].quant.values())
    with pytest.raises(ValueError, match="no quantizable layers"):
        framework.attach(torch.nn.Linear(2, 2))


def test_parameter_split_without_names(graph, features):
    model = _model("gcn")
    build_quantization(QuantConfig(method="a2q")).attach(model, example=(graph, features))
    quant = quantizer_parameters(model)
    rest = model_parameters(model)
    assert quant and rest
    assert len(quant) + len(rest) == len(list(model.parameters()))
    assert {id(p) for p in quant}.isdisjoint({id(p) for p in rest})
