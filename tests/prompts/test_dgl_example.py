"""The DGL example: qgnn quantizers and a LoRAP head inside real DGL message passing."""

import importlib.util
from pathlib import Path

import pytest
import torch

dgl = pytest.importorskip("dgl")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dgl_lorap_gcn.py"


def load_example():
    spec = importlib.util.spec_from_file_location("dgl_lorap_gcn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_layer_matches_qgnn_ops_and_trains():
    example = load_example()
    from qgnn.graph import aggregate, from_dgl

    torch.manual_seed(0)
    graph = dgl.add_self_loop(dgl.graph((torch.randint(0, 30, (90,)), torch.randint(0, 30, (90,))), num_nodes=30))
    layer = example.QuantLoRAPGraphConv(6, 5).eval()
    torch.nn.init.normal_(layer.lorap.V)  # make the head do something
    h = torch.randn(30, 6)
    out = layer(graph, h)
    # The same maths through qgnn's own graph type: no quantization yet (observers unseen).
    g = from_dgl(graph)
    norm = g.in_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(-1)
    s = aggregate(g, (h @ layer.weight) * norm) * norm
    torch.testing.assert_close(out, layer.lorap(s) + layer.bias, rtol=1e-5, atol=1e-5)
    # A training forward makes the quantizers observe; afterwards the aggregate sits on a 4-bit grid.
    layer.train()
    layer(graph, h)
    layer.eval()
    with torch.no_grad():
        q = layer.q_aggregate(torch.randn(200, 5))
    assert q.unique().numel() <= 16
    assert example.main(epochs=40) > 0.7
