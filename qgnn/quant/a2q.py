"""A2Q (Zhu et al., ICLR 2023): aggregation-aware learnable bit widths per node.

Parts chosen (DESIGN §3):

- Node features (each layer's ``input`` site): a :class:`NodeWiseQuantizer` with a learnable
  step and bit width per node (starting at 4 bits), trained by each node's own quantization
  error (local gradient), not by the task loss. For a fixed node set (node tasks) each node
  owns its ``(s_i, b_i)``; for graph tasks, where test nodes are unseen, a bank of
  ``bank_size`` (1000) rows is shared and each node uses the row whose ``s * qmax(b)`` is
  nearest to its own ``max |x|`` (gradients flow back to the chosen rows).
- Weights: per-output-channel learnable steps (LSQ) at a fixed ``weight_bits`` (4).
- Linear outputs (the result of ``x W``: GCN / GAT ``feature``, GIN ``hidden`` and
  ``output``): per-feature-channel learnable steps at the same fixed width.
- Linear outputs computed after the aggregation (GIN's MLP ``hidden`` and ``output``) carry
  each node's degree-dependent scale (a hub's sum is a hundred times a leaf's), which one step
  per channel cannot follow; ``a2q.post_aggregation: per_node`` gives them node-wise
  quantizers like the node features (A2Q's reference GIN quantizes its MLP's input node-wise).
- Other sites (aggregates, layer outputs, edge tensors) stay in full precision, as in A2Q.
- Loss term: ``a * relu(M - M_target)**2`` with ``M`` the node-feature memory in KB,
  ``sum_sites sum_i b_i * F_site / 8 / 1024``, from the bits of the last forward pass;
  ``M_target`` by default the memory at the starting width.
- Steps are learned in the log domain by default (``a2q.step_param``; see
  :class:`~qgnn.quant.config.A2QOptions` for the measured reason).

:meth:`A2QFramework.summary` reports the average bit width the features land on.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from qgnn.quant.config import QuantConfig
from qgnn.quant.framework import QuantFramework, _zero_like_model, quantizer_modules
from qgnn.quant.quantizers import LSQQuantizer, NodeWiseQuantizer

# Sites holding the output of a linear map ``x W^T``, per layer class (and its subclasses).
LINEAR_OUTPUT_SITES = {
    "QGCNConv": ("feature",),
    "QGATConv": ("feature",),
    "QGINConv": ("hidden", "output"),
}
# Linear outputs computed *after* the aggregation (GIN's MLP): their rows carry the node's
# degree-dependent scale, which ``a2q.post_aggregation: per_node`` gives node-wise quantizers.
POST_AGGREGATION_SITES = {"QGINConv": ("hidden", "output")}
NODE_FEATURE_SITES = ("input",)
BITS_PER_KB = 8 * 1024


def _sites(table: dict, layer: nn.Module) -> tuple[str, ...]:
    for cls in type(layer).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return ()


def linear_output_sites(layer: nn.Module) -> tuple[str, ...]:
    return _sites(LINEAR_OUTPUT_SITES, layer)


def post_aggregation_sites(layer: nn.Module) -> tuple[str, ...]:
    return _sites(POST_AGGREGATION_SITES, layer)


def channel_step_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The per-channel (LSQ) steps of weights and linear outputs, for their own learning rate."""
    return [p for _, q in quantizer_modules(model) if isinstance(q, LSQQuantizer) for p in q.parameters()]


def feature_memory_kb(quantizers) -> torch.Tensor:
    """``M = sum_q sum_i b_i * F_q / 8 / 1024`` over node-wise quantizers' last forward pass."""
    total = None
    for q in quantizers:
        if q.node_bits is None or q.node_bits.numel() == 0:
            continue
        width = int(q.observed_numel) // q.node_bits.numel()
        term = q.node_bits.sum() * width / BITS_PER_KB
        total = term if total is None else total + term
    return total


class A2QFramework(QuantFramework):
    """A2Q with options ``cfg.a2q``; weights and linear outputs at ``cfg.weight_bits`` (4)."""

    method = "a2q"

    def __init__(self, cfg: Optional[QuantConfig] = None):
        super().__init__(cfg)
        self.node_mode = "per_node" if self.cfg.a2q.node_mode == "auto" else self.cfg.a2q.node_mode

    def attach(self, model: nn.Module, example: Optional[tuple] = None) -> nn.Module:
        if self.cfg.a2q.node_mode == "auto":
            from qgnn.nn.models import GraphPredictor  # graph tasks meet unseen nodes

            self.node_mode = "bank" if isinstance(model, GraphPredictor) else "per_node"
        return super().attach(model, example)

    def make_quantizer(self, layer: nn.Module, site: str, kind: str) -> nn.Module:
        opts = self.cfg.a2q
        bits = self.cfg.resolved_weight_bits()
        if kind == "weight":
            return LSQQuantizer(bits, granularity="per_row", signed=True, step_param=opts.step_param,
                                init=opts.step_init)
        node_wise = site in NODE_FEATURE_SITES or (
            opts.post_aggregation == "per_node" and site in post_aggregation_sites(layer))
        if kind == "node" and node_wise:
            return NodeWiseQuantizer(self.node_mode, self.cfg.a2q_init_bits(), opts.min_bits,
                                     opts.max_bits, opts.bank_size, step_param=opts.step_param)
        if kind == "node" and site in linear_output_sites(layer):
            return LSQQuantizer(bits, granularity="per_column", signed=None,
                                step_param=opts.step_param, init=opts.step_init)
        return nn.Identity()

    def node_quantizers(self, model: nn.Module) -> list[NodeWiseQuantizer]:
        return [q for _, q in quantizer_modules(model) if isinstance(q, NodeWiseQuantizer)]

    def memory_kb(self, model: nn.Module) -> Optional[torch.Tensor]:
        """Node-feature memory ``M`` (KB) of the last forward pass, with gradient to the bits."""
        return feature_memory_kb(self.node_quantizers(model))

    def memory_target_kb(self, model: nn.Module) -> float:
        if self.cfg.a2q.memory_target_kb is not None:
            return float(self.cfg.a2q.memory_target_kb)
        elements = sum(int(q.observed_numel) for q in self.node_quantizers(model))
        return self.cfg.a2q_target_bits() * elements / BITS_PER_KB

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``a * relu(M - M_target)**2``; call after the forward pass, before ``backward``."""
        memory = self.memory_kb(model)
        if memory is None:
            return _zero_like_model(model)
        excess = torch.relu(memory - self.memory_target_kb(model))
        return self.cfg.a2q.penalty * excess.pow(2)

    def average_bits(self, model: nn.Module) -> Optional[float]:
        """Average node-feature bit width (weighted by element count) of the last forward pass."""
        bits = elements = 0.0
        for q in self.node_quantizers(model):
            n = int(q.observed_numel)
            bits += q.storage_bits() * n
            elements += n
        return bits / elements if elements else None

    def summary(self, model: nn.Module) -> dict:
        memory = self.memory_kb(model)
        return {
            "method": self.method,
            "node_mode": self.node_mode,
            "weight_bits": self.cfg.resolved_weight_bits(),
            "average_feature_bits": self.average_bits(model),
            "feature_memory_kb": None if memory is None else float(memory.detach()),
            "memory_target_kb": self.memory_target_kb(model),
        }
