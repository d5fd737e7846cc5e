"""Quantizable message-passing layers: GCN, GIN and GAT.

Every layer follows the same anatomy (DESIGN §2)::

    h -Q_input-> [node prompt] -> dropout -> linear(Q_weight(W)) -Q_feature-> aggregate -Q_aggregate-> s
    s -> s + LoRAP(s) -> update -Q_output-> h'

Feature dropout belongs to the layer and comes after ``Q_input``: a quantizer placed after
dropout calibrates its range on inputs scaled by ``1 / (1 - p)`` in training, then rounds
the unscaled inputs at evaluation on a grid twice too coarse (at p = 0.5), which cost
vanilla QAT most of its accuracy at W4A4.

Each ``Q_*`` is an entry of the layer's ``quant`` ``ModuleDict`` (``nn.Identity`` until a
QAT framework from :mod:`qgnn.quant` replaces it); the class attribute ``QUANT_SITES``
names the sites and says what each one sees: ``"node"`` (first dim = nodes), ``"edge"``
(first dim = edges, in the graph's edge order) or ``"weight"`` (a parameter). The prompt
slots ``node_prompt`` (``x -> x'``) and ``agg_prompt`` (``(s, layer_input) -> s'``) are
``None`` until :mod:`qgnn.prompts` fills them.

A layer runs unchanged on a qgnn :class:`~qgnn.graph.Graph` or a ``dgl.DGLGraph``: the ops
of :mod:`qgnn.graph.ops` dispatch on the graph type.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qgnn.graph import ops

Tensor = torch.Tensor


class QuantizableConv(nn.Module):
    """Base class: owns the quantization sites and the two prompt slots.

    Args:
        dropout: feature dropout on the layer's input while training.
        agg_kernel: ``"triton"``: sum / mean aggregation on CUDA runs qgnn's Triton CSR kernel
            (:func:`qgnn.graph.ops.uses_triton_kernel` says when); ``"torch"``: torch.sparse
            (cuSPARSE) or index ops.
        low_bit_gather: on the Triton path, when the aggregated tensor is a quantizer's output
            with a fixed grid (see ``code_grid`` in :mod:`qgnn.quant.quantizers`), pack it to
            8, 4 or 2 bits a value and let the kernel gather the codes; the sums are the same.
    """

    QUANT_SITES: dict[str, str] = {}

    def __init__(self, dropout: float = 0.0, agg_kernel: str = "triton", low_bit_gather: bool = True):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if agg_kernel not in ops.KERNELS:
            raise ValueError(f"agg_kernel must be one of {ops.KERNELS}, got {agg_kernel!r}.")
        self.dropout = dropout
        self.agg_kernel = agg_kernel
        self.low_bit_gather = low_bit_gather
        self.quant = nn.ModuleDict({name: nn.Identity() for name in self.QUANT_SITES})
        self.node_prompt: Optional[nn.Module] = None
        self.agg_prompt: Optional[nn.Module] = None

    def _q(self, site: str, x: Optional[Tensor]) -> Optional[Tensor]:
        return None if x is None else self.quant[site](x)

    def _aggregate(self, graph, h: Tensor, edge_weight: Optional[Tensor] = None,
                   site: Optional[str] = None) -> Tensor:
        """Weighted sum of in-neighbour rows of ``h``. ``site``: the quantization site whose
        output ``h`` is, unchanged; its integer grid lets the Triton kernel gather codes."""
        grid = None
        if site is not None and self.low_bit_gather and ops.uses_triton_kernel(
                graph, h, edge_weight, "sum", self.agg_kernel):
            code_grid = getattr(self.quant[site], "code_grid", None)
            grid = code_grid(h) if code_grid is not None else None
        return ops.aggregate(graph, h, edge_weight, kernel=self.agg_kernel, grid=grid)

    def _layer_input(self, x: Tensor) -> Tensor:
        """``dropout(prompt(Q_input(x)))``: the input every layer starts from."""
        x = self._prompt_nodes(self._q("input", x))
        return F.dropout(x, self.dropout, self.training)

    def _prompt_nodes(self, x: Tensor) -> Tensor:
        return x if self.node_prompt is None else self.node_prompt(x)

    def _prompt_aggregate(self, s: Tensor, layer_input: Tensor,
                          bias: Optional[Tensor] = None) -> Tensor:
        """``prompt(s) (+ bias)``; a prompt that ``takes_bias`` adds the bias itself."""
        prompt = self.agg_prompt
        if prompt is not None and bias is not None and getattr(prompt, "takes_bias", False):
            return prompt(s, layer_input, bias=bias)
        s = s if prompt is None else prompt(s, layer_input)
        return s if bias is None else s + bias

    def _quantize_and_prompt(self, s: Tensor, layer_input: Tensor,
                             bias: Optional[Tensor] = None) -> Tensor:
        """``prompt(Q_aggregate(s)) (+ bias)``. A prompt that ``takes_quantizer`` (LoRAP) is
        handed the quantizer, so that its fused kernel can round ``s`` in its own pass, and
        one that ``takes_bias`` the bias, so that it adds it in that pass too. Without a
        prompt, a quantizer with ``forward_add`` adds the bias in its own rounding pass."""
        prompt, quantizer = self.agg_prompt, self.quant["aggregate"]
        if prompt is not None and getattr(prompt, "takes_quantizer", False):
            if bias is not None and getattr(prompt, "takes_bias", False):
                return prompt(s, layer_input, quantizer=quantizer, bias=bias)
            s = prompt(s, layer_input, quantizer=quantizer)
            return s if bias is None else s + bias
        if prompt is None and bias is not None and getattr(quantizer, "forward_add", None):
            return quantizer.forward_add(s, bias)  # the add in the rounding's own pass
        return self._prompt_aggregate(self._q("aggregate", s), layer_input, bias)


class QGCNConv(QuantizableConv):
    r"""Graph convolution (Kipf & Welling, 2017) with quantization sites.

    .. math::
        s = \hat{A}\, Q(Q(x) Q(W)^\top), \quad \hat{A} = D^{-1/2}(A + I)D^{-1/2}, \quad
        h' = Q(s + \mathrm{LoRAP}(s) + b)

    Args:
        in_channels: input width ``F_in``.
        out_channels: output width ``F_out``.
        add_self_loops: add ``I`` before normalising.
        normalize: use the symmetric normalisation; otherwise sum the neighbours
            (a ``Graph``'s own edge weights are then used).
        bias: learn an additive bias.
        dropout: feature dropout on the (quantized, prompted) input while training.
        agg_kernel, low_bit_gather: how the aggregation runs (see :class:`QuantizableConv`).

    Shapes: ``x`` ``(N, F_in)`` -> ``(N, F_out)``.
    """

    QUANT_SITES = {
        "input": "node",
        "weight": "weight",
        "feature": "node",
        "edge_weight": "edge",
        "aggregate": "node",
        "output": "node",
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        add_self_loops: bool = True,
        normalize: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
        agg_kernel: str = "triton",
        low_bit_gather: bool = True,
    ):
        super().__init__(dropout, agg_kernel, low_bit_gather)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.add_self_loops = add_self_loops
        self.normalize = normalize
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, graph, x: Tensor) -> Tensor:
        x = self._layer_input(x)
        h = self._q("feature", F.linear(x, self._q("weight", self.weight)))
        if self.normalize:
            graph, norm = ops.gcn_norm(graph, self.add_self_loops)
        else:
            norm = None if ops.is_dgl_graph(graph) else graph.edge_weight
        s = self._aggregate(graph, h, self._q("edge_weight", norm), "feature")
        return self._q("output", self._quantize_and_prompt(s, x, self.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, normalize={self.normalize}, dropout={self.dropout}"


class QGINConv(QuantizableConv):
    r"""Graph isomorphism layer (Xu et al., 2019) with a two-layer MLP and quantization sites.

    .. math::
        s = (1 + \epsilon)\, Q(x) + \sum_{j \to i} Q(x_j), \quad
        h' = Q(\mathrm{MLP}(s + \mathrm{LoRAP}(s)))

    The MLP is ``Linear(F_in, F_hidden) -> [BatchNorm] -> ReLU -> Linear(F_hidden, F_out)``
    with quantized weights and hidden activation.

    Args:
        in_channels: input width ``F_in``.
        out_channels: output width ``F_out``.
        hidden_channels: MLP hidden width (default ``F_out``).
        eps: initial ``epsilon``.
        train_eps: learn ``epsilon``.
        batch_norm: batch norm inside the MLP.
        dropout: feature dropout on the (quantized, prompted) input while training.
        agg_kernel, low_bit_gather: how the aggregation runs (see :class:`QuantizableConv`).

    Shapes: ``x`` ``(N, F_in)`` -> ``(N, F_out)``.
    """

    QUANT_SITES = {
        "input": "node",
        "aggregate": "node",
        "weight1": "weight",
        "hidden": "node",
        "weight2": "weight",
        "output": "node",
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Optional[int] = None,
        eps: float = 0.0,
        train_eps: bool = False,
        batch_norm: bool = False,
        dropout: float = 0.0,
        agg_kernel: str = "triton",
        low_bit_gather: bool = True,
    ):
        super().__init__(dropout, agg_kernel, low_bit_gather)
        hidden_channels = hidden_channels or out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.initial_eps = eps
        self.lin1 = nn.Linear(in_channels, hidden_channels)
        self.norm = nn.BatchNorm1d(hidden_channels) if batch_norm else None
        self.lin2 = nn.Linear(hidden_channels, out_channels)
        if train_eps:
            self.eps = nn.Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def forward(self, graph, x: Tensor) -> Tensor:
        x = self._layer_input(x)
        # x is Q_input's output unless dropout or a node prompt changed it since.
        on_grid = self.node_prompt is None and not (self.training and self.dropout > 0)
        s = (1 + self.eps) * x + self._aggregate(graph, x, site="input" if on_grid else None)
        s = self._quantize_and_prompt(s, x)
        h = F.linear(s, self._q("weight1", self.lin1.weight), self.lin1.bias)
        if self.norm is not None:
            h = self.norm(h)
        h = self._q("hidden", F.relu(h))
        return self._q("output", F.linear(h, self._q("weight2", self.lin2.weight), self.lin2.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, train_eps={isinstance(self.eps, nn.Parameter)}, dropout={self.dropout}"


class QGATConv(QuantizableConv):
    r"""Graph attention layer (Veličković et al., 2018) with quantization sites.

    .. math::
        h = Q(Q(x) Q(W)^\top), \quad
        \alpha_{ji} = Q(\mathrm{softmax}_j(Q(\mathrm{LeakyReLU}(a_s^\top h_j + a_d^\top h_i)))),
        \quad s_i = \Vert_{k} \sum_j \alpha^k_{ji} h^k_j

    followed by ``h' = Q(s + LoRAP(s) + b)``; LoRAP acts on the concatenated heads (or
    their mean when ``concat=False``).

    Args:
        in_channels: input width ``F_in``.
        out_channels: width per head ``F``.
        heads: number of heads ``H``.
        concat: concatenate heads (``H * F`` outputs) or average them (``F``).
        negative_slope: LeakyReLU slope of the attention logits.
        attn_dropout: dropout on the attention coefficients while training.
        add_self_loops: add ``I`` so that every node attends to itself.
        dropout: feature dropout on the (quantized, prompted) input while training.
        agg_kernel, low_bit_gather: how the aggregation runs (see :class:`QuantizableConv`).

    Shapes: ``x`` ``(N, F_in)`` -> ``(N, H * F)`` or ``(N, F)``.
    """

    QUANT_SITES = {
        "input": "node",
        "weight": "weight",
        "feature": "node",
        "logit": "edge",
        "attention": "edge",
        "aggregate": "node",
        "output": "node",
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        attn_dropout: float = 0.0,
        add_self_loops: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
        agg_kernel: str = "triton",
        low_bit_gather: bool = True,
    ):
        super().__init__(dropout, agg_kernel, low_bit_gather)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.attn_dropout = attn_dropout
        self.add_self_loops = add_self_loops
        self.weight = nn.Parameter(torch.empty(heads * out_channels, in_channels))
        self.att_src = nn.Parameter(torch.empty(heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(heads, out_channels))
        width = heads * out_channels if concat else out_channels
        self.bias = nn.Parameter(torch.empty(width)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        bound = math.sqrt(6.0 / (1 + self.out_channels))  # glorot on a (1, F) vector per head
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, graph, x: Tensor) -> Tensor:
        if self.add_self_loops:
            graph = ops.add_self_loops(graph)
        x = self._layer_input(x)
        h = F.linear(x, self._q("weight", self.weight)).view(-1, self.heads, self.out_channels)
        h = self._q("feature", h)
        logit = ops.edge_scores(graph, (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1))
        logit = self._q("logit", F.leaky_relu(logit, self.negative_slope))
        alpha = self._q("attention", ops.edge_softmax(graph, logit))
        alpha = F.dropout(alpha, self.attn_dropout, self.training)
        s = self._q("aggregate", self._aggregate(graph, h, alpha))  # (N, H, F)
        s = s.flatten(1) if self.concat else s.mean(1)
        return self._q("output", self._prompt_aggregate(s, x, self.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, dropout={self.dropout}"
