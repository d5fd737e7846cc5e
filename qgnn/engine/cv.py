"""k-fold cross-validation for graph datasets without a fixed split (REDDIT-BINARY).

Protocol (DESIGN §6): scikit-learn ``StratifiedKFold(folds, shuffle=True,
random_state=train.seed)`` gives each fold's test part. Inside the remaining ``folds - 1``
parts, a second ``StratifiedKFold(folds - 1, shuffle=True, random_state=train.seed)`` holds
out one part (stratified) as the validation set that selects the model (best validation
epoch), so with 10 folds a fold trains on 80%, validates on 10% and tests on 10% of the
graphs. This is *not* GIN's protocol (which picks the epoch with the best test accuracy
averaged over folds); no test number here ever influences model selection.

:func:`fit_folds` trains every fold into ``OUT/fold_<k>/`` (``best.pt``, ``last.pt``,
``metrics.json``; each checkpoint's config carries ``data.fold = k``, so ``eval.py
--checkpoint OUT/fold_<k>/best.pt`` rebuilds exactly that fold) and writes
``OUT/metrics.json`` with the mean and sample standard deviation over folds and the
per-fold numbers. ``--set data.fold=k`` trains one fold only (an ordinary run).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qgnn.engine.config import Config
from qgnn.errors import ConfigError

PROTOCOL = (
    "stratified {folds}-fold CV (StratifiedKFold, shuffle, seed {seed}); per fold a stratified "
    "1/{inner} of the training folds validates (model selection), the held-out fold tests"
)


def fold_splits(labels: torch.Tensor, folds: int, fold: int, seed: int) -> dict:
    """``{"train", "val", "test"}`` int64 indices of fold ``fold`` (see the module docstring)."""
    from sklearn.model_selection import StratifiedKFold

    if folds < 3:
        raise ConfigError(f"config key 'data.folds' must be at least 3 (train, val, test), got {folds}.")
    if not 0 <= fold < folds:
        raise ConfigError(f"config key 'data.fold' is {fold}; allowed values: 0..{folds - 1} (data.folds={folds}).")
    y = labels.reshape(len(labels), -1)[:, 0].cpu().numpy()
    outer = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    rest, test = outer[fold]
    inner = StratifiedKFold(folds - 1, shuffle=True, random_state=seed)
    fit_part, val_part = next(inner.split(np.zeros(len(rest)), y[rest]))
    as_tensor = lambda a: torch.from_numpy(np.sort(a)).long()  # noqa: E731
    return {"train": as_tensor(rest[fit_part]), "val": as_tensor(rest[val_part]), "test": as_tensor(test)}


def uses_folds(cfg: Config, dataset) -> bool:
    """True when ``cfg`` asks for every fold: no ``data.fold`` and a dataset without splits."""
    from qgnn.data import GraphDataset

    return cfg.data.fold is None and isinstance(dataset, GraphDataset) and not dataset.splits


def fold_config(cfg: Config, fold: int) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold))


def fit_folds(cfg: Config, out_dir, device: str = "cpu", data_root: Optional[str] = None,
              resume: bool = False, progress: bool = True) -> dict:
    """Train every fold of ``cfg`` and return the summary written to ``out_dir/metrics.json``.

    With ``resume=True``, folds whose ``metrics.json`` is complete are kept and an
    interrupted fold continues from its ``last.pt``.
    """
    from qgnn.engine.trainer import _write_json, fit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_fold = []
    for k in range(cfg.data.folds):
        fold_cfg = fold_config(cfg, k)
        fold_dir = out / f"fold_{k}"
        done = _finished(fold_dir) if resume else None
        if done is None:
            done = fit(fold_cfg, fold_dir, device=device, data_root=data_root,
                       resume=resume and (fold_dir / "last.pt").is_file(), progress=progress)
        per_fold.append(done)
    summary = summarise_folds(cfg, per_fold)
    _write_json(out / "metrics.json", summary)
    return summary


def _finished(fold_dir: Path) -> Optional[dict]:
    path = fold_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return None if metrics.get("interrupted") else metrics


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise_folds(cfg: Config, per_fold: list) -> dict:
    """One metrics dict for the whole CV run: fold 0's facts, means, stds and per-fold numbers."""
    first = per_fold[0]
    summary = {k: v for k, v in first.items() if k not in ("best_epoch", "epochs_run", "interrupted")}
    keys = ("test_metric", "val_metric", "train_metric")
    for key in keys:
        mean, std = _mean_std([m[key] for m in per_fold])
        summary[key] = mean
        summary[key.replace("_metric", "_std")] = std
    seconds = [m["seconds_per_epoch"] for m in per_fold if m.get("seconds_per_epoch") is not None]
    summary.update(
        config=cfg.name,
        seconds_per_epoch=float(np.median(seconds)) if seconds else None,
        folds=len(per_fold),
        cv_protocol=PROTOCOL.format(folds=cfg.data.folds, seed=cfg.train.seed, inner=cfg.data.folds - 1),
        per_fold=[
            {"fold": k, **{key: m.get(key) for key in ("best_epoch", "epochs_run", *keys, "seconds_per_epoch")}}
            for k, m in enumerate(per_fold)
        ],
        interrupted=any(m.get("interrupted") for m in per_fold),
    )
    return summary
