"""Degree-Quant (Tailor et al., ICLR 2021): protective masking and percentile ranges.

Parts chosen (DESIGN §3):

- A protective mask per training forward pass: node ``i`` is kept in full precision with
  probability ``p_i = p_low + change * CDF(in_degree_i)`` (CDF over the nodes of the graph
  passed to the model; defaults (0, 0.1) at INT8 and (0.1, 0.1) below 8 bits). The model's
  forward pre-hook samples one mask per pass into the shared context; every node site of
  every layer reads it. Nothing is masked in eval mode.
- Edge sites (GCN edge weights, GAT logits and attention) have no node of their own: each
  edge takes its *source* node's mask (the node whose message it weights), looked up in
  the graph the layer uses (with self-loops when the layer adds them). ``edge_mask: none``
  quantizes edge tensors unmasked instead.
- Activations: per-tensor affine grid, range from the momentum average (0.01) of the batch
  0.1% / 99.9% percentiles at INT8 and 1% / 99% below 8 bits, computed on a random sample of
  large tensors; the quantized path and the protected path keep separate observers.
  ``dq.input_range: minmax`` gives the model's raw input momentum min/max instead (sparse
  inputs such as bag-of-words have a 99th percentile of 0).
- Weights: per-tensor symmetric grid over the momentum min/max (weights have no outlier
  nodes to clip).
- Gradients: clipped STE everywhere (zero gradient where the value was clamped).

Example::

    >>> import torch
    >>> from qgnn.graph import Graph
    >>> from qgnn.nn import NodeClassifier
    >>> from qgnn.quant import QuantConfig, build_quantization
    >>> g = Graph.from_edges([0, 1, 2, 3], [1, 2, 3, 0])
    >>> model = NodeClassifier("gin", 5, 8, 3)
    >>> framework = build_quantization(QuantConfig(method="dq", weight_bits=4, act_bits=4))
    >>> _ = framework.attach(model)
    >>> model(g, torch.randn(4, 5)).shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from qgnn.graph import ops
from qgnn.quant.config import QuantConfig
from qgnn.quant.context import QuantContext, protection_probability, sample_protective_mask
from qgnn.quant.framework import QuantFramework
from qgnn.quant.observers import MinMaxObserver, PercentileObserver
from qgnn.quant.quantizers import FakeQuantize, MaskedQuantizer

__all__ = ["DegreeQuantFramework", "protection_probability", "sample_protective_mask"]


class DegreeQuantFramework(QuantFramework):
    """Degree-Quant at ``cfg.weight_bits`` / ``cfg.act_bits`` with options ``cfg.dq``."""

    method = "dq"

    def __init__(self, cfg: Optional[QuantConfig] = None):
        super().__init__(cfg)
        p_low, change = self.cfg.dq_protection()
        self.p_low, self.change = p_low, change

        def sampler(graph) -> torch.Tensor:
            return sample_protective_mask(ops.in_degrees(graph), p_low, change)

        self.context = QuantContext(mask_sampler=sampler, mask_edges=self.cfg.dq.edge_mask == "source")

    def weight_part(self, bits: int) -> nn.Module:
        return FakeQuantize(bits, symmetric=True, signed=True,
                            observer=MinMaxObserver(self.cfg.dq.momentum), gradient="clipped")

    def activation_part(self, kind: str, bits: int, model_input: bool = False) -> nn.Module:
        """Masked affine quantizer; ``model_input``: the raw input (see ``dq.input_range``)."""
        if model_input and self.cfg.dq.input_range == "minmax":
            observer = MinMaxObserver(self.cfg.dq.momentum)
        else:
            observer = PercentileObserver(self.cfg.dq_percentile(bits), self.cfg.dq.sample_size,
                                          self.cfg.dq.momentum)
        inner = FakeQuantize(bits, symmetric=False, observer=observer, gradient="clipped")
        return MaskedQuantizer(inner, self.context, kind)

    def make_quantizer(self, layer: nn.Module, site: str, kind: str) -> nn.Module:
        if kind == "weight":
            return self.weight_part(self.cfg.resolved_weight_bits())
        return self.activation_part(kind, self.cfg.resolved_act_bits(),
                                    model_input=self.is_model_input(layer, site))

    def summary(self, model: nn.Module) -> dict:
        return {"method": self.method, "weight_bits": self.cfg.resolved_weight_bits(),
                "act_bits": self.cfg.resolved_act_bits(), "p_low": self.p_low,
                "change": self.change, "percentile": self.cfg.dq_percentile()}
