"""Node prompts on the input features, before aggregation: GPF and GPF-plus (Fang et al., 2023)."""

from __future__ import annotations

import torch
from torch import nn

from qgnn.kernels import lorap_inject
from qgnn.kernels._common import use_triton

Tensor = torch.Tensor


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class GPF(nn.Module):
    r"""Graph prompt feature: one learnable vector added to every node, :math:`x_i + p`.

    Args:
        dim: feature width ``F``.

    Shapes: ``x`` ``(N, F)`` -> ``(N, F)``.
    """

    def __init__(self, dim: int):
        super().__init__()
        _check_positive("dim", dim)
        self.dim = dim
        self.prompt = nn.Parameter(torch.empty(1, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zero, as LoRAP's V: training starts from the unprompted model. A Glorot prompt has
        # ~10x the norm of a row-normalised bag-of-words row and swamps it from the start.
        nn.init.zeros_(self.prompt)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.prompt

    def flops_per_node(self) -> int:
        return self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class GPFPlus(nn.Module):
    r"""GPF-plus: each node mixes ``k`` learnable basis prompts by its own attention scores.

    .. math::
        x_i + \mathrm{softmax}(x_i W_a^\top + b_a)\, P, \qquad P \in \mathbb{R}^{k \times F}

    This is a LoRAP head on ``x`` with ``U = I_k`` and ``V = P``, so on CUDA it runs as the
    fused LoRAP kernel (:func:`qgnn.kernels.lorap_inject`), which reads ``x`` and writes the
    output once where separate torch ops make several passes.

    Args:
        dim: feature width ``F``.
        k: number of basis prompts.
        fused: use the fused Triton kernel on CUDA tensors (torch ops otherwise, and always
            on CPU).

    Shapes: ``x`` ``(N, F)`` -> ``(N, F)``; the mixing weights of a node sum to one.
    """

    def __init__(self, dim: int, k: int = 10, fused: bool = True):
        super().__init__()
        _check_positive("dim", dim)
        _check_positive("k", k)
        self.dim, self.k, self.fused = dim, k, fused
        self.bases = nn.Parameter(torch.empty(k, dim))
        self.score = nn.Linear(dim, k)
        # U of the LoRAP form (not a parameter, not saved)
        self.register_buffer("identity", torch.eye(k), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bases)  # see GPF.reset_parameters
        self.score.reset_parameters()

    def weights(self, x: Tensor) -> Tensor:
        """``(N, k)`` mixing weights (rows sum to one)."""
        return torch.softmax(self.score(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and use_triton(x, self.bases):
            return lorap_inject(x, self.score.weight, self.score.bias, self.identity, self.bases)
        return x + self.weights(x) @ self.bases

    def flops_per_node(self) -> int:
        # scores (2 F k), softmax (~3 k), mix (2 k F), add (F)
        return 4 * self.dim * self.k + 3 * self.k + self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}" + ("" if self.fused else ", fused=False")
