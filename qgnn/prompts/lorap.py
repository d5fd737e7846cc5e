"""LoRAP: a low-rank, input-dependent correction added to each aggregated feature."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from qgnn.kernels import lorap_inject, lorap_reference
from qgnn.prompts.node import _check_positive

Tensor = torch.Tensor
SCORER_INPUTS = ("aggregated", "layer_input")


class LoRAP(nn.Module):
    r"""Low-rank aggregation prompt, applied after aggregation and before the update.

    .. math::
        \alpha_i = \mathrm{softmax}(z_i W_a^\top + b_a), \qquad
        s_i \leftarrow s_i + (\alpha_i U) V

    with ``k`` bases ``P = U V`` of rank ``r`` (never formed: ``(alpha U) V`` is cheaper).
    ``V`` starts at zero, so the head starts as the identity while gradients still reach
    ``V``; ``U`` and ``W_a`` start as ``nn.Linear`` weights do. On CUDA the whole head runs
    as one fused Triton kernel (:func:`qgnn.kernels.lorap_inject`).

    Args:
        dim: width ``d`` of the aggregated feature ``s``.
        k: number of bases.
        rank: rank ``r`` of the bases.
        scorer_input: ``"aggregated"`` (``z = s``) or ``"layer_input"`` (``z`` = the
            layer's input features, width ``score_dim``).
        score_dim: width of ``z`` when ``scorer_input="layer_input"``.
        fused: use the fused Triton kernel on CUDA tensors (the torch reference otherwise,
            and always on CPU).

    Shapes: ``s`` ``(N, d)``, ``layer_input`` ``(N, d_in)`` -> ``(N, d)``.

    ``forward(s, layer_input, quantizer, bias)`` applies ``quantizer`` (the layer's aggregate
    quantizer) to ``s`` first. Where that quantizer can hand its grid over
    (``grid_for_consumer``: vanilla QAT's per-tensor fake quantization with plain STE) and
    the head runs fused, the rounding happens inside the head's kernel: one pass over ``s``
    for both instead of two. ``bias`` (the layer's output bias, ``(d,)``) is added after the
    head, on CUDA inside its kernels: no pass of its own forward, and its gradient formed
    as the backward reads the incoming gradient.
    """

    takes_quantizer = True
    takes_bias = True

    def __init__(self, dim: int, k: int = 40, rank: int = 2, scorer_input: str = "aggregated",
                 score_dim: Optional[int] = None, fused: bool = True):
        super().__init__()
        _check_positive("dim", dim)
        _check_positive("k", k)
        _check_positive("rank", rank)
        if scorer_input not in SCORER_INPUTS:
            raise ValueError(f"scorer_input must be one of {SCORER_INPUTS}, got {scorer_input!r}.")
        if scorer_input == "layer_input" and score_dim is None:
            raise ValueError("scorer_input='layer_input' needs score_dim, the width of the layer input.")
        self.dim, self.k, self.rank, self.scorer_input = dim, k, rank, scorer_input
        self.fused = fused
        self.score_dim = dim if scorer_input == "aggregated" else score_dim
        self.score = nn.Linear(self.score_dim, k)
        self.U = nn.Parameter(torch.empty(k, rank))
        self.V = nn.Parameter(torch.empty(rank, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.score.reset_parameters()
        bound = 1.0 / math.sqrt(self.k)  # nn.Linear(k, r)'s default init, fan_in = k
        nn.init.uniform_(self.U, -bound, bound)
        nn.init.zeros_(self.V)

    def forward(self, s: Tensor, layer_input: Optional[Tensor] = None,
                quantizer: Optional[nn.Module] = None, bias: Optional[Tensor] = None) -> Tensor:
        z = None
        if self.scorer_input == "layer_input":
            if layer_input is None:
                raise ValueError("this LoRAP head scores the layer input; pass layer_input.")
            z = layer_input
        grid = None
        if quantizer is not None:
            take_grid = getattr(quantizer, "grid_for_consumer", None) if self.fused else None
            grid = take_grid(s) if take_grid is not None else None
            if grid is None:
                s = quantizer(s)
        inject = lorap_inject if self.fused else lorap_reference
        return inject(s, self.score.weight, self.score.bias, self.U, self.V, z, grid, bias)

    def flops_per_node(self) -> int:
        # scores (2 d_in k), softmax (~3 k), alpha U (2 k r), (alpha U) V (2 r d), add (d)
        return 2 * self.score_dim * self.k + 3 * self.k + 2 * self.k * self.rank + 2 * self.rank * self.dim + self.dim

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, k={self.k}, rank={self.rank}, scorer_input={self.scorer_input}, "
                f"fused={self.fused}")
