"""The ``prompt:`` section of a config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from qgnn.errors import ConfigError

NODE_PROMPTS = ("none", "gpf", "gpf_plus")
AGGREGATION_PROMPTS = ("none", "lorap")


@dataclass
class PromptConfig:
    """Which prompts a model gets.

    Attributes:
        node: prompt on the input features: ``none``, ``gpf`` or ``gpf_plus``.
        aggregation: prompt on every layer's aggregated feature: ``none`` or ``lorap``.
        node_k: GPF-plus basis prompts.
        k: LoRAP bases; rank: their rank ``r``.
        scorer_input: what LoRAP scores: ``aggregated`` (``s``) or ``layer_input``.
        shared: one LoRAP head for all layers of the same width (else one per layer).
        fused: run LoRAP (and GPF-plus, the same head with ``U = I``) as one fused Triton
            kernel on CUDA (``false``: separate torch ops).
        node_lr: learning rate of the node prompt's parameters (``null``: ``train.lr``).
            Adam moves every prompt element by about the learning rate per step, so at
            0.01 a dense prompt soon outweighs sparse row-normalised inputs (~0.05 per
            non-zero) and, once quantized, takes the range of every later site (CiteSeer
            GCN QAT W4A4 with GPF-plus, Glorot init, lr 0.01: 22.9% over 5 seeds; zero init
            and node_lr 1e-3: 68.9% for seed 0, against 66.5% without a prompt).

    ``gpf_plus`` + ``lorap`` is GPF-LoRAP.
    """

    node: str = field(default="none", metadata={"choices": NODE_PROMPTS})
    aggregation: str = field(default="none", metadata={"choices": AGGREGATION_PROMPTS})
    node_k: int = 10
    k: int = 40
    rank: int = 2
    scorer_input: str = field(default="aggregated", metadata={"choices": ("aggregated", "layer_input")})
    shared: bool = False
    fused: bool = True
    node_lr: Optional[float] = 1.0e-3

    def validate(self) -> None:
        for key in ("node_k", "k", "rank"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'prompt.{key}' must be a positive integer, got {getattr(self, key)}.")
        if self.node_lr is not None and not self.node_lr > 0:
            raise ConfigError(f"config key 'prompt.node_lr' must be positive (or null), got {self.node_lr}.")

    @property
    def label(self) -> str:
        """``none``, ``gpf``, ``gpfplus``, ``lorap``, ``gpf_lorap`` (config-name vocabulary)."""
        node = {"none": "", "gpf": "gpf", "gpf_plus": "gpfplus"}[self.node]
        if self.aggregation == "lorap":
            return "gpf_lorap" if node == "gpfplus" else ("lorap" if not node else f"{node}_lorap")
        return node or "none"
