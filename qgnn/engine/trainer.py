"""The training loop: one readable function, settings from the config, nothing global.

``fit`` trains, selects the model on the validation metric, and leaves in ``out_dir``:
``best.pt`` (the selected model), ``last.pt`` (for ``resume``) and ``metrics.json``.
Datasets evaluated by cross-validation train every fold into ``out_dir/fold_<k>/`` and
summarise them in ``out_dir/metrics.json`` (:mod:`qgnn.engine.cv`).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import qgnn
from qgnn.data import load_dataset
from qgnn.engine.checkpoint import load_checkpoint, save_checkpoint
from qgnn.engine.config import Config, config_from_dict
from qgnn.signals import interrupts_held
from qgnn.engine.tasks import make_task
from qgnn.errors import CheckpointError, ConfigError, TrainingError
from qgnn.prompts import GPF, GPFPlus, attach_prompts, prompt_report
from qgnn.quant import build_quantization, model_parameters, quantizer_parameters, size_report
from qgnn.quant.a2q import channel_step_parameters


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {name!r}.")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dataset_options(cfg: Config) -> dict:
    return {
        "normalize_features": cfg.data.normalize_features,
        "features": cfg.data.features,
    }


def build(cfg: Config, device: torch.device, data_root: Optional[str] = None, dataset=None):
    """Task, model (prompts attached) and QAT framework (attached) for ``cfg``.

    The same builders serve ``eval.py``, so a checkpoint's state dict fits the model.
    ``dataset``: an already loaded dataset of ``cfg`` (else it is read from the data root).
    """
    if dataset is None:
        dataset = load_dataset(cfg.data.name, data_root or cfg.data.root, **dataset_options(cfg))
    task = make_task(dataset, device, cfg)
    model = task.build_model(cfg)
    attach_prompts(model, cfg.prompt)
    model = model.to(device)
    framework = build_quantization(cfg.quant)
    framework.attach(model, example=task.example())
    return task, model, framework


def make_optimizer(cfg: Config, model) -> torch.optim.Optimizer:
    """Adam; quantizer parameters (steps, bit widths, logits) get no weight decay and their
    own learning rate (``quant.lr``; A2Q's per-channel steps ``quant.a2q.channel_lr`` when
    set), node prompts theirs (``prompt.node_lr``)."""
    quant_params = quantizer_parameters(model)
    node_prompt_params = [p for m in model.modules() if isinstance(m, (GPF, GPFPlus)) for p in m.parameters()]
    special = {id(p) for p in quant_params + node_prompt_params}
    groups = [{"params": [p for p in model_parameters(model) if id(p) not in special],
               "weight_decay": cfg.train.weight_decay}]
    if node_prompt_params:
        groups.append({"params": node_prompt_params, "weight_decay": cfg.train.weight_decay,
                       "lr": cfg.train.lr if cfg.prompt.node_lr is None else cfg.prompt.node_lr})
    quant_lr = cfg.train.lr if cfg.quant.lr is None else cfg.quant.lr
    if cfg.quant.method == "a2q" and cfg.quant.a2q.channel_lr is not None:
        channel = channel_step_parameters(model)
        if channel:
            groups.append({"params": channel, "weight_decay": 0.0, "lr": cfg.quant.a2q.channel_lr})
            taken = {id(p) for p in channel}
            quant_params = [p for p in quant_params if id(p) not in taken]
    if quant_params:
        groups.append({"params": quant_params, "weight_decay": 0.0, "lr": quant_lr})
    return torch.optim.Adam(groups, lr=cfg.train.lr, fused=fused_adam_applies(groups) or None)


def fused_adam_applies(groups) -> bool:
    """Whether every parameter is a CUDA float tensor, so that Adam can step in one fused
    kernel a group rather than a dozen foreach launches: a full-batch epoch is host-bound on
    the GPU. One H100, W4A4 GCN at ogbn-arxiv size, train epoch 11.37 against 13.27 ms, with
    LoRAP 12.46 against 15.62 (``run_ab_epoch.sh``, two rounds; the evaluation, which takes no
    step, also ran 10-20% faster in those runs, so part of it is the machine's drift)."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_cuda and p.dtype.is_floating_point for p in params)


def _better(task, value: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return value > best if task.higher_is_better else value < best


def _write_json(path: Path, payload: dict) -> None:
    with interrupts_held():
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def fit(cfg: Config, out_dir, device: str = "cpu", data_root: Optional[str] = None,
        resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` and return the metrics written to ``out_dir/metrics.json``.

    With ``resume=True`` the run continues from ``out_dir/last.pt`` (same config required).
    A dataset without a fixed split and no ``data.fold`` runs every fold (:mod:`qgnn.engine.cv`).
    """
    from qgnn.engine import cv

    dataset = load_dataset(cfg.data.name, data_root or cfg.data.root, **dataset_options(cfg))
    if cv.uses_folds(cfg, dataset):
        return cv.fit_folds(cfg, out_dir, device, data_root, resume, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    set_seed(cfg.train.seed)
    task, model, framework = build(cfg, dev, data_root, dataset)
    optimizer = make_optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer, task)

    state = {"best_epoch": None, "best_val": None, "best_scores": None, "epoch_seconds": []}
    start_epoch = 1
    if resume:
        start_epoch, state = _resume(out / "last.pt", cfg, model, optimizer, scheduler, dev)

    def snapshot(name: str, epoch: int) -> None:
        save_checkpoint(
            out / name, config=cfg.to_dict(), epoch=epoch, model=model.state_dict(),
            optimizer=optimizer.state_dict() if name == "last.pt" else None,
            metrics={"scores": state["best_scores"] if name == "best.pt" else None},
            extra={
                "state": {k: v for k, v in state.items()},
                "scheduler": scheduler.state_dict() if scheduler else None,
                "rng": torch.get_rng_state(),
            },
        )

    epoch = start_epoch - 1
    since_best = 0
    bar = tqdm(range(start_epoch, cfg.train.epochs + 1), desc=cfg.name, disable=not progress,
               initial=start_epoch - 1, total=cfg.train.epochs, dynamic_ncols=True)
    try:
        for epoch in bar:
            _sync(dev)
            t0 = time.perf_counter()
            loss = task.train_epoch(model, optimizer, framework.penalty, cfg.train.grad_clip)
            if scheduler and not _on_plateau(scheduler):
                scheduler.step()
            _sync(dev)
            state["epoch_seconds"].append(time.perf_counter() - t0)
            scores = task.evaluate(model)
            if scheduler and _on_plateau(scheduler):
                scheduler.step(scores["val"])
            phase = framework.phase(model)
            if framework.on_epoch_end(model, epoch - 1):
                # Parameters changed roles (MixQ fixed its widths): new optimizer, and the
                # search epochs do not compete with the fixed-width model in selection.
                optimizer = make_optimizer(cfg, model)
                scheduler = _scheduler(cfg, optimizer, task)
                state.update(best_epoch=None, best_val=None, best_scores=None)
                snapshot("best.pt", epoch)  # the fixed-width model replaces any search-phase best
            if phase == "search":
                bar.set_postfix(phase="search", loss=f"{loss:.4f}", val=f"{scores['val']:.2f}")
            elif _better(task, scores["val"], state["best_val"]):
                state.update(best_epoch=epoch, best_val=scores["val"], best_scores=scores)
                snapshot("best.pt", epoch)
                since_best = 0
            else:
                since_best += 1
            if state["best_val"] is not None:
                bar.set_postfix(loss=f"{loss:.4f}", val=f"{scores['val']:.2f}",
                                best=f"{state['best_val']:.2f}@{state['best_epoch']}")
            if epoch % cfg.train.checkpoint_every == 0:
                snapshot("last.pt", epoch)
            if cfg.train.patience is not None and since_best >= cfg.train.patience:
                break
            if _on_plateau(scheduler) and optimizer.param_groups[0]["lr"] < cfg.train.min_lr:
                break  # reduce-on-plateau protocol: stop once the lr fell below min_lr
    except KeyboardInterrupt:
        snapshot("last.pt", epoch)
        _write_json(out / "metrics.json", _metrics(cfg, task, state, dev, epoch, interrupted=True))
        raise
    except TrainingError as exc:
        raise TrainingError(f"epoch {epoch}: {exc} Lower train.lr or add train.grad_clip.") from exc
    finally:
        bar.close()
    snapshot("last.pt", epoch)
    metrics = _metrics(cfg, task, state, dev, epoch)
    metrics.update(model_facts(cfg, task, model, framework))
    _write_json(out / "metrics.json", metrics)
    _print_size(metrics)
    return metrics


def _scheduler(cfg: Config, optimizer, task):
    """``train.scheduler``: ``step`` (halve every ``lr_step`` epochs; none without lr_step) or
    ``plateau`` (multiply by ``lr_gamma`` after ``lr_patience`` epochs without a better val metric)."""
    t = cfg.train
    if t.scheduler == "plateau":
        mode = "max" if task.higher_is_better else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode, factor=t.lr_gamma, patience=t.lr_patience)
    if not t.lr_step:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, t.lr_step, t.lr_gamma)


def _on_plateau(scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def model_facts(cfg: Config, task, model, framework) -> dict:
    """Quantization method, model size in bits and prompt overhead, for metrics.json."""
    size = size_report(model, example=task.example())
    summary = framework.summary(model)
    return {
        "method": cfg.quant.method,
        "bits": _bits_label(cfg),
        "prompt": cfg.prompt.label,
        "avg_bits": size["average_bits"],
        "compression": size["compression_ratio"],
        "size": {k: v for k, v in size.items() if not isinstance(v, (list, dict))},
        "quant_summary": summary,
        "prompt_overhead": prompt_report(model, task.num_nodes()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _bits_label(cfg: Config) -> str:
    q = cfg.quant
    if q.method == "fp32":
        return "fp32"
    if q.method == "mixq":  # the searched widths: W{candidates}A{candidates}
        weights, acts = q.mixq_candidates("weight"), q.mixq_candidates("act")
        return f"W{{{','.join(map(str, weights))}}}A{{{','.join(map(str, acts))}}}"
    label = f"W{q.resolved_weight_bits()}A{q.resolved_act_bits()}"
    return label + ("-learned" if q.method == "a2q" else "")


def _resume(path: Path, cfg: Config, model, optimizer, scheduler, dev):
    ckpt = load_checkpoint(path, map_location=dev)
    different = _config_differences(ckpt["config"], cfg.to_dict())
    if different:
        raise CheckpointError(
            f"cannot resume from {path}: it was written with another config "
            f"({', '.join(different)}). "
            "Resume with the same --config and --set options, or start a new --out folder."
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    extra = ckpt["extra"]
    if scheduler and extra.get("scheduler"):
        scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"].cpu())  # loaded onto the training device with the rest
    return ckpt["epoch"] + 1, dict(extra["state"])


def _config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ, as ``key: saved -> current``.

    A key added to the schema after the checkpoint was written takes its default on both
    sides, so a newer qgnn resumes an older run whose settings it can still express."""
    try:
        saved = config_from_dict(saved).to_dict()
    except ConfigError as exc:
        return [f"its config no longer validates: {exc}"]

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(saved), flat(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)]


def _metrics(cfg: Config, task, state: dict, dev, epochs_run: int, interrupted: bool = False) -> dict:
    seconds = state["epoch_seconds"]
    scores = state["best_scores"] or {}
    return {
        "config": cfg.name,
        "dataset": cfg.data.name,
        "arch": cfg.model.arch,
        "seed": cfg.train.seed,
        "metric": task.metric,
        "best_epoch": state["best_epoch"],
        "val_metric": scores.get("val"),
        "test_metric": scores.get("test"),
        "train_metric": scores.get("train"),
        "epochs_run": epochs_run,
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "interrupted": interrupted,
        "versions": {"qgnn": qgnn.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }


def evaluate_checkpoint(path, device: str = "cpu", data_root: Optional[str] = None) -> dict:
    """Rebuild the model of a checkpoint and recompute its metrics on every split."""
    ckpt = load_checkpoint(path)
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} carries an invalid config: {exc}") from exc
    dev = resolve_device(device)
    task, model, framework = build(cfg, dev, data_root)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match its own config's model: {exc}") from exc
    scores = task.evaluate(model)
    facts = model_facts(cfg, task, model, framework)
    _print_size(facts)
    return {
        **{k: facts[k] for k in ("method", "bits", "prompt", "avg_bits", "compression", "size")},
        "config": cfg.name,
        "dataset": cfg.data.name,
        "arch": cfg.model.arch,
        "metric": task.metric,
        "epoch": ckpt["epoch"],
        "val_metric": scores.get("val"),
        "test_metric": scores.get("test"),
        "train_metric": scores.get("train"),
    }


def _print_size(facts: dict) -> None:
    size = facts["size"]
    print(f"model size: {size['total_bits'] / 8 / 1024:.1f} KiB at {facts['avg_bits']:.2f} bits on average "
          f"({facts['compression']:.2f}x smaller than float32); method {facts['method']}, "
          f"{facts['bits']}, prompt {facts['prompt']}", file=sys.stderr)
