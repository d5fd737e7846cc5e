"""A qgnn quantizer inside a plain DGL message-passing pipeline gives what qgnn's layer gives."""

import dgl
import dgl.function as fn
import pytest
import torch
import torch.nn.functional as F

from qgnn.graph import to_dgl
from qgnn.nn import QGINConv
from qgnn.quant import FakeQuantize, MaskedQuantizer, MinMaxObserver, QuantContext


def _dgl_gin(g: dgl.DGLGraph, x: torch.Tensor, layer: QGINConv, quantizer) -> torch.Tensor:
    """GIN written the DGL way (graphconv.py style), with the quantizer on the node input."""
    with g.local_scope():
        h = quantizer(x)
        g.srcdata["h"] = h
        g.update_all(fn.copy_u("h", "m"), fn.sum("m", "neigh"))
        s = (1 + layer.eps) * h + g.dstdata["neigh"]
        return layer.lin2(F.relu(layer.lin1(s)))


def _layer(quantizer) -> QGINConv:
    torch.manual_seed(0)
    layer = QGINConv(7, 5, train_eps=True, eps=0.3)
    layer.quant["input"] = quantizer
    return layer


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_in_update_all_matches_the_qgnn_layer(bits, graph, features):
    quantizer = FakeQuantize(bits, observer=MinMaxObserver(momentum=1.0))
    quantizer(features)  # observe once, then freeze
    quantizer.eval()
    layer = _layer(quantizer)
    x1 = features.clone().requires_grad_(True)
    x2 = features.clone().requires_grad_(True)
    ours = layer(graph, x1)
    theirs = _dgl_gin(to_dgl(graph), x2, layer, quantizer)
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours.pow(2).sum().backward()
    theirs.pow(2).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)


def test_masked_quantizer_in_update_all_matches_the_qgnn_layer(graph, features):
    context = QuantContext()
    inner = FakeQuantize(3, observer=MinMaxObserver(momentum=1.0), gradient="clipped")
    quantizer = MaskedQuantizer(inner, context, "node")
    mask = torch.rand(graph.num_nodes, generator=torch.Generator().manual_seed(3)) < 0.3
    context.set_mask(mask)
    layer = _layer(quantizer)  # training mode: the mask applies
    ours = layer(graph, features)
    theirs = _dgl_gin(to_dgl(graph), features, layer, quantizer)
    assert torch.allclose(ours, theirs, atol=1e-5)
