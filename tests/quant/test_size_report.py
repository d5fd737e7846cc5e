"""size_report: bits of every stored weight and feature, average bits, compression ratio."""

import io

import pytest
import torch

from qgnn.nn import NodeClassifier
from qgnn.quant import QuantConfig, build_quantization, size_report


def _gcn():
    torch.manual_seed(0)
    return NodeClassifier("gcn", 7, 16, 3, dropout=0.0)


def test_fp32_model(graph, features):
    model = _gcn()
    report = size_report(model, example=(graph, features))
    params = sum(p.numel() for p in model.parameters())
    assert sum(w["numel"] for w in report["weights"]) == params
    assert report["average_bits"] == 32.0 and report["compression_ratio"] == 1.0
    # GCN sites per layer: input, feature, edge_weight, aggregate, output
    names = [f["name"] for f in report["features"]]
    assert names[:4] == ["convs.0.input", "convs.0.feature", "convs.0.edge_weight", "convs.0.aggregate"]
    edges_with_loops = graph.num_edges + graph.num_nodes
    sizes = {f["name"]: f["numel"] for f in report["features"]}
    assert sizes["convs.0.input"] == 24 * 7 and sizes["convs.0.edge_weight"] == edges_with_loops
    # without an example an fp32 model has no recorded features
    assert size_report(model)["features"] == []


def test_qat_model_hand_computed(graph, features):
    model = _gcn()
    build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=8)).attach(model)
    model.train()
    model(graph, features)
    report = size_report(model)
    bits = {w["name"]: w["bits"] for w in report["weights"]}
    assert bits == {"convs.0.weight": 4, "convs.0.bias": 32, "convs.1.weight": 4, "convs.1.bias": 32}
    e = graph.num_edges + graph.num_nodes
    feature_numel = (24 * 7 + 24 * 16 + e + 24 * 16 + 24 * 16) + (24 * 16 + 24 * 3 + e + 24 * 3 + 24 * 3)
    weight_bits = 4 * (16 * 7 + 3 * 16) + 32 * (16 + 3)
    assert report["weight_bits"] == weight_bits
    assert report["feature_bits"] == 8 * feature_numel
    numel = feature_numel + 16 * 7 + 3 * 16 + 16 + 3
    assert report["average_bits"] == pytest.approx((weight_bits + 8 * feature_numel) / numel)
    assert report["compression_ratio"] == pytest.approx(32 * numel / (weight_bits + 8 * feature_numel))
    # the same numbers after a weights-only checkpoint round trip, without a forward pass
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = _gcn()
    build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=8)).attach(fresh)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    again = size_report(fresh)
    assert again["total_bits"] == report["total_bits"]


def test_a2q_reports_per_node_bits_and_quantizer_overhead(graph, features):
    model = _gcn()
    framework = build_quantization(QuantConfig(method="a2q"))
    framework.attach(model, example=(graph, features))
    with torch.no_grad():
        model.convs[0].quant["input"].bits.fill_(2.0)
    report = size_report(model, example=(graph, features))
    rows = {f["name"]: f["bits"] for f in report["features"]}
    assert rows["convs.0.input"] == 2.0 and rows["convs.1.input"] == 4.0
    assert rows["convs.0.feature"] == 4.0 and rows["convs.0.aggregate"] == 32.0
    assert report["quantizer_param_bits"] > 0
    assert framework.average_bits(model) == pytest.approx((2 * 24 * 7 + 4 * 24 * 16) / (24 * 23))
