"""Tasks: what one epoch of training and one evaluation mean for each kind of dataset.

A task owns the dataset on its device, builds the model that fits it, runs one training
epoch and evaluates every split with the task's metric.

- :class:`NodeClassificationTask`: one graph, full batch, accuracy (the official OGB
  ``Evaluator`` for ``ogbn-*`` datasets).
- :class:`GraphClassificationTask` / :class:`GraphRegressionTask`: many small graphs in
  mini-batches (:func:`qgnn.data.collate`), accuracy / mean absolute error. Splits are the
  dataset's own (ZINC, superpixels) or, for datasets evaluated by cross-validation
  (REDDIT-BINARY), fold ``data.fold`` of :func:`qgnn.engine.cv.fold_splits`.

Edge labels (ZINC bond types, superpixel affinities) are not used by the models yet: the
layers take no edge features.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from qgnn.data import GraphDataset, NodeDataset, collate
from qgnn.engine.config import Config
from qgnn.errors import ConfigError, TrainingError
from qgnn.nn import NodeClassifier
from qgnn.nn.models import GraphPredictor

Tensor = torch.Tensor
LossHook = Callable[[torch.nn.Module], Tensor]


class NodeClassificationTask:
    """Full-batch node classification; metric: accuracy on each split (percent)."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, dataset: NodeDataset, device: torch.device):
        self.dataset = dataset.to(device)
        self.device = device
        # OGB node datasets are scored by the official evaluator (same number, same rules).
        self.ogb_name = dataset.name if dataset.name.lower().startswith("ogbn") else None

    def build_model(self, cfg: Config) -> torch.nn.Module:
        m = cfg.model
        return NodeClassifier(
            m.arch, self.dataset.num_features, m.hidden, self.dataset.num_classes,
            num_layers=m.num_layers, dropout=m.dropout, heads=m.heads, out_heads=m.out_heads,
            attn_dropout=m.attn_dropout, batch_norm=m.batch_norm,
            agg_kernel="triton" if m.agg_kernel == "auto" else m.agg_kernel,
            low_bit_gather=cfg.quant.low_bit_gather,
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
        loss.backward()
        # Read the loss once, after the backward is queued: a check between forward and
        # backward would stall the GPU while the host launches the whole backward.
        value = float(loss.detach())
        check_finite(value, model, logits)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return value

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        d = self.dataset
        model.eval()
        pred = model(d.graph, d.x).argmax(-1)
        if self.ogb_name is not None:
            from qgnn.data.ogb import evaluate as ogb_evaluate

            return {split: 100.0 * ogb_evaluate(self.ogb_name, d.y[idx], pred[idx])
                    for split, idx in d.splits.items()}
        return {
            split: 100.0 * float((pred[idx] == d.y[idx]).float().mean())
            for split, idx in d.splits.items()
        }


class _GraphTask:
    """Mini-batch training over many small graphs (shared by classification and regression).

    Splits: the dataset's ``train``/``val``/``test`` when it has them; otherwise fold
    ``cfg.data.fold`` of :func:`qgnn.engine.cv.fold_splits` (``cfg.data.folds`` folds,
    shuffled with ``cfg.train.seed``). Each training epoch visits the training graphs in a
    fresh random order, drawn by a ``torch.Generator`` seeded from the global torch RNG
    (itself seeded by ``train.seed`` and saved in checkpoints), so a fixed seed repeats and
    a resumed run continues the same sequence. Evaluation batches are collated once, in
    index order, and kept on the device.
    """

    metric = ""
    higher_is_better = True

    def __init__(self, dataset: GraphDataset, device: torch.device, cfg: Config):
        self.dataset = dataset
        self.device = device
        self.batch_size = int(cfg.train.batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"config key 'train.batch_size' must be at least 1, got {self.batch_size}.")
        self.splits = self._splits(dataset, cfg)
        self._eval_batches: dict = {}
        self._example: Optional[tuple] = None

    @staticmethod
    def _splits(dataset: GraphDataset, cfg: Config) -> dict:
        from qgnn.engine.cv import fold_splits

        fold = cfg.data.fold
        if dataset.splits:
            if fold is not None:
                raise ConfigError(
                    f"config key 'data.fold' is {fold}, but {dataset.name} has a fixed "
                    "train/val/test split; remove data.fold."
                )
            missing = [k for k in ("train", "val", "test") if k not in dataset.splits]
            if missing:
                raise ConfigError(f"{dataset.name} has no {', '.join(missing)} split.")
            return {k: dataset.splits[k] for k in ("train", "val", "test")}
        if fold is None:
            raise ConfigError(
                f"{dataset.name} is evaluated by cross-validation: set data.fold (0..{cfg.data.folds - 1}) "
                "or train through qgnn.engine.fit, which runs every fold."
            )
        return fold_splits(dataset.labels, cfg.data.folds, fold, cfg.train.seed)

    # -------------------------------------------------------------- model and inputs
    def _out_dim(self) -> int:
        raise NotImplementedError

    def build_model(self, cfg: Config) -> torch.nn.Module:
        m, d = cfg.model, self.dataset
        sample_x = d[0].x
        categorical = d.num_node_types is not None and not sample_x.is_floating_point()
        in_dim = 1 if categorical else (int(sample_x.shape[1]) if sample_x.dim() > 1 else 1)
        return GraphPredictor(
            m.arch, in_dim, m.hidden, self._out_dim(), num_layers=m.num_layers,
            dropout=m.dropout, heads=m.heads, readout=m.readout, batch_norm=m.batch_norm,
            head_dropout=m.head_dropout, head_norm=m.head_norm,
            num_node_types=d.num_node_types if categorical else None,
            agg_kernel="torch" if m.agg_kernel == "auto" else m.agg_kernel,
            low_bit_gather=cfg.quant.low_bit_gather,
        )

    def _batch(self, indices) -> tuple:
        graph, x, _edge_attr, y = collate([self.dataset[int(i)] for i in indices])
        if x.is_floating_point() and x.dim() == 1:
            x = x.unsqueeze(-1)
        return graph.to(self.device), x.to(self.device), y.to(self.device)

    def _batches(self, indices: torch.Tensor):
        for start in range(0, indices.numel(), self.batch_size):
            yield self._batch(indices[start : start + self.batch_size])

    def example(self) -> tuple:
        """``(graph, x)`` of the first training batch (quantizer initialisation, size report)."""
        if self._example is None:
            graph, x, _ = self._batch(self.splits["train"][: self.batch_size])
            self._example = (graph, x)
        return self._example

    def num_nodes(self) -> int:
        return self.example()[0].num_nodes

    # -------------------------------------------------------------- training and evaluation
    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def train_epoch(self, model, optimizer, extra_loss: LossHook, grad_clip=None) -> float:
        model.train()
        train = self.splits["train"]
        seed = int(torch.randint(0, 2**62, (1,)))
        order = train[torch.randperm(train.numel(), generator=torch.Generator().manual_seed(seed))]
        total, count = 0.0, 0
        for graph, x, y in self._batches(order):
            optimizer.zero_grad(set_to_none=True)
            out = model(graph, x)
            loss = self.loss(out, y) + extra_loss(model)
            loss.backward()
            value = float(loss.detach())  # one read per batch, after the backward is queued
            check_finite(value, model, out)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            total += value * y.shape[0]
            count += y.shape[0]
        return total / max(count, 1)

    def _eval_split(self, split: str) -> list:
        if split not in self._eval_batches:
            self._eval_batches[split] = list(self._batches(self.splits[split]))
        return self._eval_batches[split]

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        model.eval()
        scores = {}
        for split in ("train", "val", "test"):
            batches = self._eval_split(split)
            outs = [model(graph, x) for graph, x, _ in batches]
            ys = [y for _, _, y in batches]
            scores[split] = self.score(torch.cat(outs), torch.cat(ys)) if outs else float("nan")
        return scores


class GraphClassificationTask(_GraphTask):
    """Graph classification (REDDIT-BINARY, superpixels); metric: accuracy (percent)."""

    metric = "accuracy"
    higher_is_better = True

    def _out_dim(self) -> int:
        return int(self.dataset.num_classes)

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output, y.view(-1).long())

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        return 100.0 * float((outputs.argmax(-1) == targets.view(-1)).float().mean())


class GraphRegressionTask(_GraphTask):
    """Graph regression (ZINC); trained with the L1 loss, metric: mean absolute error."""

    metric = "mae"
    higher_is_better = False

    def _out_dim(self) -> int:
        y = self.dataset[0].y
        return int(y.numel())

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.l1_loss(output, y.view_as(output).to(output.dtype))

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        return float((outputs - targets.view_as(outputs)).abs().mean())


def check_finite(loss: float, model: torch.nn.Module, output: Tensor) -> None:
    """Stop with the offending tensor named when the loss is NaN or infinite (called before
    the optimizer step, so the parameters are still those that gave this loss)."""
    if math.isfinite(loss):
        return
    culprit = "the model output"
    if torch.isfinite(output).all():
        culprit = "the extra loss term (quantization penalty)"
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            culprit = f"parameter '{name}'"
            break
    raise TrainingError(f"loss is {loss}; first non-finite tensor: {culprit}.")


def make_task(dataset, device: torch.device, cfg: Optional[Config] = None):
    """The task for ``dataset`` (graph tasks read batch size, folds and seed from ``cfg``)."""
    if isinstance(dataset, NodeDataset):
        return NodeClassificationTask(dataset, device)
    if isinstance(dataset, GraphDataset):
        cfg = cfg or Config()
        if dataset.task == "graph-cls":
            return GraphClassificationTask(dataset, device, cfg)
        if dataset.task == "graph-reg":
            return GraphRegressionTask(dataset, device, cfg)
        raise TypeError(f"GraphDataset {dataset.name} has unknown task {dataset.task!r}.")
    raise TypeError(f"no task for dataset type {type(dataset).__name__}")
