"""Tasks: what one epoch of training and one evaluation mean for each kind of dataset.

A task owns the dataset on its device, builds the model that fits it, runs one training
epoch and evaluates every split with the task's metric.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from qgnn.data import NodeDataset
from qgnn.engine.config import Config
from qgnn.errors import TrainingError
from qgnn.nn import NodeClassifier

Tensor = torch.Tensor
LossHook = Callable[[torch.nn.Module], Tensor]


class NodeClassificationTask:
    """Full-batch node classification; metric: accuracy on each split (percent)."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, dataset: NodeDataset, device: torch.device):
        self.dataset = dataset.to(device)
        self.device = device

    def build_model(self, cfg: Config) -> torch.nn.Module:
        m = cfg.model
        return NodeClassifier(
            m.arch, self.dataset.num_features, m.hidden, self.dataset.num_classes,
            num_layers=m.num_layers, dropout=m.dropout, heads=m.heads, out_heads=m.out_heads,
            attn_dropout=m.attn_dropout, batch_norm=m.batch_norm,
        )

    def example(self) -> tuple:
        """``(graph, x)`` for one forward pass (quantizer initialisation, size report)."""
        return self.dataset.graph, self.dataset.x

    def num_nodes(self) -> int:
        return self.dataset.graph.num_nodes

    def train_epoch(self, model, optimizer, extra_loss: LossHook, grad_clip=None) -> float:
        d = self.dataset
        model.train()
        optimizer.zero_grad(set_to_none=True)
        logits = model(d.graph, d.x)
        train = d.splits["train"]
        loss = F.cross_entropy(logits[train], d.y[train]) + extra_loss(model)
        check_finite(loss, model, logits)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        d = self.dataset
        model.eval()
        pred = model(d.graph, d.x).argmax(-1)
        return {
            split: 100.0 * float((pred[idx] == d.y[idx]).float().mean())
            for split, idx in d.splits.items()
        }


def check_finite(loss: Tensor, model: torch.nn.Module, output: Tensor) -> None:
    """Stop with the offending tensor named when the loss is NaN or infinite."""
    if torch.isfinite(loss):
        return
    culprit = "the model output"
    if torch.isfinite(output).all():
        culprit = "the extra loss term (quantization penalty)"
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            culprit = f"parameter '{name}'"
            break
    raise TrainingError(f"loss is {loss.item()}; first non-finite tensor: {culprit}.")


def make_task(dataset, device: torch.device):
    if isinstance(dataset, NodeDataset):
        return NodeClassificationTask(dataset, device)
    raise TypeError(f"no task for dataset type {type(dataset).__name__}")
