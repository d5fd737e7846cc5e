"""Vanilla QAT: every site quantized per tensor, ranges from momentum min/max, plain STE.

Parts (DESIGN §3): weights use a symmetric signed grid, activations (node and edge sites) an
affine grid over their running range; both ranges are momentum averages (0.01) of the
batch min / max, and ``round`` passes gradients straight through (also where clamped).

Example::

    >>> import torch
    >>> from qgnn.graph import Graph
    >>> from qgnn.nn import NodeClassifier
    >>> from qgnn.quant import QuantConfig, build_quantization
    >>> g = Graph.from_edges([0, 1, 2, 3], [1, 2, 3, 0])
    >>> model = NodeClassifier("gcn", 5, 8, 3)
    >>> framework = build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4))
    >>> _ = framework.attach(model)
    >>> model(g, torch.randn(4, 5)).shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from torch import nn

from qgnn.quant.framework import QuantFramework
from qgnn.quant.observers import MinMaxObserver
from qgnn.quant.quantizers import FakeQuantize


def weight_quantizer(bits: int, momentum: float = 0.01, gradient: str = "ste") -> FakeQuantize:
    """Per-tensor symmetric signed fake quantization of a weight, momentum min/max range."""
    return FakeQuantize(bits, symmetric=True, signed=True, observer=MinMaxObserver(momentum),
                        gradient=gradient)


def activation_quantizer(bits: int, momentum: float = 0.01, gradient: str = "ste") -> FakeQuantize:
    """Per-tensor affine fake quantization of an activation, momentum min/max range."""
    return FakeQuantize(bits, symmetric=False, observer=MinMaxObserver(momentum), gradient=gradient)


class QATFramework(QuantFramework):
    """Vanilla QAT at ``cfg.weight_bits`` / ``cfg.act_bits`` (default W8A8)."""

    method = "qat"

    def weight_part(self, bits: int) -> nn.Module:
        return weight_quantizer(bits, self.cfg.qat.momentum)

    def activation_part(self, kind: str, bits: int, model_input: bool = False) -> nn.Module:
        return activation_quantizer(bits, self.cfg.qat.momentum)

    def make_quantizer(self, layer: nn.Module, site: str, kind: str) -> nn.Module:
        if kind == "weight":
            return self.weight_part(self.cfg.resolved_weight_bits())
        return self.activation_part(kind, self.cfg.resolved_act_bits())

    def summary(self, model: nn.Module) -> dict:
        return {"method": self.method, "weight_bits": self.cfg.resolved_weight_bits(),
                "act_bits": self.cfg.resolved_act_bits()}
