"""Config schema, training loop, evaluation and checkpoints."""

from qgnn.engine.checkpoint import load_checkpoint, save_checkpoint
from qgnn.engine.config import Config, config_from_dict, load_config
from qgnn.engine.trainer import evaluate_checkpoint, fit

__all__ = [
    "Config",
    "config_from_dict",
    "load_config",
    "fit",
    "evaluate_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
