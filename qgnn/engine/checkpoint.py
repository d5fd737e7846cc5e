"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked on load.

A checkpoint is a dict of tensors and plain Python values::

    {"format": "qgnn-checkpoint", "format_version": 1, "qgnn_version": ..., "torch_version": ...,
     "config": {...}, "epoch": int, "model": state_dict, "optimizer": state_dict | None,
     "metrics": {...}, "extra": {...}}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

import qgnn
from qgnn.signals import interrupts_held
from qgnn.errors import CheckpointError

FORMAT = "qgnn-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "config", "epoch", "model")


def save_checkpoint(path, *, config: dict, epoch: int, model: dict, optimizer: Optional[dict] = None,
                    metrics: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write the checkpoint to a temporary file in the same folder, then rename it over ``path``.

    A crash leaves either the old file or the new one, never half of one; an interrupt
    (SIGINT, SIGTERM) waits until the file is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "qgnn_version": qgnn.__version__,
        "torch_version": str(torch.__version__),
        "config": config,
        "epoch": epoch,
        "model": model,
        "optimizer": optimizer,
        "metrics": metrics or {},
        "extra": extra or {},
    }
    with interrupts_held():  # an interrupt mid-write would surface as torch.save's RuntimeError
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and check a qgnn checkpoint; any problem raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. train.py writes DIR/best.pt and DIR/last.pt "
            "under its --out folder."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a qgnn checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Use another checkpoint or retrain."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a qgnn checkpoint.")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it is damaged.")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload['format_version']}, newer than this "
            f"qgnn ({qgnn.__version__}) reads ({FORMAT_VERSION}). Upgrade qgnn."
        )
    return payload
