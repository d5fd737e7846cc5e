"""Command-line entry points behind ``train.py`` and ``eval.py``.

User mistakes (:class:`~qgnn.errors.QgnnError`) print one paragraph and exit 2; an
interrupt (Ctrl-C, or SIGTERM as batch schedulers and ``timeout`` send) exits 130 after saving
``last.pt``; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from qgnn.errors import QgnnError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _run(main, argv) -> int:
    # SIGTERM takes the Ctrl-C path, so a killed job still leaves last.pt and metrics.json.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main(argv)
    except QgnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: last.pt and metrics.json were saved; rerun with --resume to continue.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_main(argv=None) -> int:
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import fit

    parser = argparse.ArgumentParser(description="Train a (quantized) GNN from a YAML config.")
    parser.add_argument("--config", help="YAML config (see configs/); defaults to Cora GCN float32")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.hidden=128 (repeatable)")
    parser.add_argument("--out", help="output folder (default runs/<config name>)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data-root", help="dataset root (default $QGNN_DATA or data/)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def main(_):
        cfg = load_config(args.config, args.overrides)
        out = args.out or f"runs/{cfg.name}"
        metrics = fit(cfg, out, device=args.device, data_root=args.data_root,
                      resume=args.resume, progress=not args.quiet)
        print(json.dumps(metrics, indent=2, sort_keys=True))
        print(f"wrote {out}/metrics.json and {out}/best.pt", file=sys.stderr)
        return 0

    return _run(main, argv)


def eval_main(argv=None) -> int:
    from qgnn.engine.trainer import evaluate_checkpoint

    parser = argparse.ArgumentParser(description="Evaluate a qgnn checkpoint on its dataset.")
    parser.add_argument("--checkpoint", required=True, help="a best.pt or last.pt written by train.py")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data-root", help="dataset root (default $QGNN_DATA or data/)")
    args = parser.parse_args(argv)

    def main(_):
        metrics = evaluate_checkpoint(args.checkpoint, device=args.device, data_root=args.data_root)
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0

    return _run(main, argv)
