"""Models for the three tasks, built from the quantizable layers of :mod:`qgnn.nn.conv`."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qgnn.graph import ops
from qgnn.nn.conv import QGATConv, QGCNConv, QGINConv, QuantizableConv

Tensor = torch.Tensor
ARCHS = ("gcn", "gin", "gat")


def make_conv(arch: str, in_dim: int, out_dim: int, *, heads: int = 1, concat: bool = True,
              attn_dropout: float = 0.0, batch_norm: bool = False, dropout: float = 0.0,
              agg_kernel: str = "triton", low_bit_gather: bool = True) -> QuantizableConv:
    """One layer of ``arch``; for GAT ``out_dim`` is the total width (split over heads if concat).
    ``agg_kernel`` and ``low_bit_gather``: see :class:`~qgnn.nn.conv.QuantizableConv`."""
    kernels = dict(dropout=dropout, agg_kernel=agg_kernel, low_bit_gather=low_bit_gather)
    if arch == "gcn":
        return QGCNConv(in_dim, out_dim, **kernels)
    if arch == "gin":
        return QGINConv(in_dim, out_dim, train_eps=True, batch_norm=batch_norm, **kernels)
    if arch == "gat":
        if concat and out_dim % heads:
            raise ValueError(f"GAT width {out_dim} is not divisible by {heads} heads.")
        per_head = out_dim // heads if concat else out_dim
        return QGATConv(in_dim, per_head, heads=heads, concat=concat, attn_dropout=attn_dropout,
                        **kernels)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHS}.")


class NodeClassifier(nn.Module):
    """A stack of quantizable layers for node classification.

    ``conv -> [batch norm] -> activation`` per hidden layer, then ``conv`` to logits; each
    layer drops features (``dropout``) after its input quantizer (see :mod:`qgnn.nn.conv`). GAT hidden layers concatenate ``heads`` heads of
    ``hidden // heads`` channels; its output layer uses ``out_heads`` averaged heads.
    ``agg_kernel`` and ``low_bit_gather`` go to every layer (see
    :class:`~qgnn.nn.conv.QuantizableConv`).

    Shapes: ``x`` ``(N, F_in)`` -> logits ``(N, C)``.
    """

    def __init__(self, arch: str, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2,
                 dropout: float = 0.5, heads: int = 8, out_heads: int = 1,
                 attn_dropout: float = 0.0, batch_norm: bool = False,
                 agg_kernel: str = "triton", low_bit_gather: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        self.arch = arch
        self.dropout = dropout
        self.activation = F.elu if arch == "gat" else F.relu
        widths = [in_dim] + [hidden] * (num_layers - 1)
        self.convs = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            self.convs.append(make_conv(
                arch, widths[i], out_dim if last else hidden,
                heads=out_heads if last else heads, concat=not last,
                attn_dropout=attn_dropout, batch_norm=batch_norm, dropout=dropout,
                agg_kernel=agg_kernel, low_bit_gather=low_bit_gather,
            ))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity() for _ in range(num_layers - 1)
        )

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, graph, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(graph, x)
            if i < len(self.convs) - 1:
                x = self.activation(self.norms[i](x))
        return x


class GraphPredictor(nn.Module):
    """Graph classification or regression: encoder -> layers -> readout -> MLP head.

    Node inputs are float features ``(N, F_in)`` or categorical labels ``(N,)`` (embedded,
    when ``num_node_types`` is given). Every layer's output is pooled per graph and the
    pooled vectors summed (the GIN readout), then a two-layer MLP gives ``(B, out_dim)``.
    ``dropout`` acts inside each layer on its (quantized) input, as in :class:`NodeClassifier`;
    ``head_dropout`` acts on the pooled vector before the head, where the GIN reference
    (Xu et al. 2019) puts its only dropout. ``head_norm`` batch-normalises the pooled vector:
    summed over graphs of thousands of nodes it reaches the hundreds to thousands, and the head
    then trains badly (REDDIT-BINARY: first-epoch loss 13-48, training accuracy stuck near 80%).
    ``agg_kernel`` and ``low_bit_gather``: as in :class:`NodeClassifier`.
    """

    def __init__(self, arch: str, in_dim: int, hidden: int, out_dim: int, num_layers: int = 4,
                 dropout: float = 0.0, heads: int = 4, readout: str = "sum",
                 batch_norm: bool = True, num_node_types: Optional[int] = None,
                 head_dropout: float = 0.0, head_norm: bool = False,
                 agg_kernel: str = "triton", low_bit_gather: bool = True):
        super().__init__()
        self.arch = arch
        self.dropout = dropout
        self.head_dropout = head_dropout
        self.readout = readout
        if num_node_types is not None:
            self.encoder = nn.Embedding(num_node_types, hidden)
        else:
            self.encoder = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            make_conv(arch, hidden, hidden, heads=heads, concat=True, batch_norm=batch_norm,
                      dropout=dropout, agg_kernel=agg_kernel, low_bit_gather=low_bit_gather)
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity() for _ in range(num_layers)
        )
        self.head_norm = nn.BatchNorm1d(hidden) if head_norm else nn.Identity()
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, graph, x: Tensor) -> Tensor:
        h = self.encoder(x)
        pooled = ops.readout(graph, h, self.readout)
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(graph, h)))
            pooled = pooled + ops.readout(graph, h, self.readout)
        pooled = F.dropout(self.head_norm(pooled), self.head_dropout, self.training)
        return self.head(pooled)
