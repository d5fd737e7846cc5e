"""One config schema (dataclasses) for every run, loaded from YAML and validated.

A YAML file mirrors :class:`Config`::

    name: cora_gcn_fp32
    data: {name: cora}
    model: {arch: gcn, hidden: 64}
    train: {epochs: 200, lr: 0.01}
    quant: {method: dq, weight_bits: 4, act_bits: 4}
    prompt: {node: gpf_plus, aggregation: lorap}

Unknown keys, wrong types and values outside a field's ``choices`` raise
:class:`~qgnn.errors.ConfigError` naming the key and what is allowed. Command-line
overrides use dotted keys: ``--set model.hidden=128`` (the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from qgnn.errors import ConfigError
from qgnn.prompts.config import PromptConfig
from qgnn.quant.config import QuantConfig


def choice(default, *choices):
    """A field that must take one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class DataConfig:
    name: str = "cora"
    root: Optional[str] = None  # data root; default: --data-root, $QGNN_DATA, data/
    normalize_features: bool = True  # Planetoid: rows sum to 1
    features: str = choice("degree", "degree", "constant")  # graphs without node features
    folds: int = 10  # cross-validation folds where the dataset has no fixed split
    fold: Optional[int] = None  # run one fold only (None: all folds)


@dataclass
class ModelConfig:
    arch: str = choice("gcn", "gcn", "gin", "gat")
    hidden: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    heads: int = 8  # GAT heads in hidden layers
    out_heads: int = 1  # GAT heads in the output layer (averaged)
    attn_dropout: float = 0.0
    batch_norm: bool = False
    readout: str = choice("sum", "sum", "mean", "max")  # graph tasks
    head_dropout: float = 0.0  # graph tasks: dropout on the pooled vector, before the MLP head
    head_norm: bool = False  # graph tasks: batch norm on the pooled vector (sum readouts of big graphs)
    # CUDA sum/mean aggregation: qgnn's Triton CSR kernel or torch.sparse. "auto": Triton on
    # node tasks (one graph, its CSR plan built once), torch.sparse on batched graph tasks,
    # where a plan per batch cost more than the kernel saves (REDDIT-BINARY GIN, one H100).
    agg_kernel: str = choice("auto", "auto", "triton", "torch")

    def validate(self) -> None:
        for key in ("hidden", "num_layers", "heads", "out_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'model.{key}' must be a positive integer, got {getattr(self, key)}.")
        for key in ("dropout", "attn_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"config key 'model.{key}' is a probability in [0, 1), got {getattr(self, key)}.")


@dataclass
class TrainConfig:
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    seed: int = 0
    patience: Optional[int] = None  # stop after this many epochs without a better val metric
    batch_size: int = 128  # graph tasks
    lr_step: Optional[int] = None  # halve (lr_gamma) the learning rate every lr_step epochs
    lr_gamma: float = 0.5
    scheduler: str = choice("step", "step", "plateau")  # plateau: x lr_gamma after lr_patience bad epochs
    lr_patience: int = 10  # plateau: epochs without a better val metric before reducing the lr
    min_lr: float = 0.0  # plateau: stop training once the lr falls below this
    grad_clip: Optional[float] = None
    checkpoint_every: int = 10  # epochs between last.pt snapshots (also written on interrupt)


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)  # qgnn/quant/config.py
    prompt: PromptConfig = field(default_factory=PromptConfig)  # qgnn/prompts/config.py

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- validation
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        try:
            return _coerce(value, args[0], key)
        except ConfigError:
            raise ConfigError(
                f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
            ) from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}.")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}.")
        (item,) = typing.get_args(tp)[:1]
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tp(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


def from_dict(cls, values: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict, checking keys, types and choices."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'. Allowed keys"
            f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}."
        )
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        kwargs[name] = _coerce(value, hints[name], key)
        choices = fields[name].metadata.get("choices")
        if choices and kwargs[name] not in choices:
            raise ConfigError(
                f"config key '{key}' is {kwargs[name]!r}; allowed values: {', '.join(map(str, choices))}."
            )
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a nested dict (values parsed as YAML)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value (e.g. model.hidden=128), got {item!r}.")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section.")
        node[parts[-1]] = value
    return values


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {path} does not exist. The shipped configs are in configs/.")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level.")
        values.setdefault("name", p.stem)
    values = apply_overrides(values, overrides or [])
    return config_from_dict(values)


def config_from_dict(values: dict) -> Config:
    return from_dict(Config, values)
