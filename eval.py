"""Evaluate a checkpoint: ``python eval.py --checkpoint DIR/best.pt``."""

import sys

from qgnn.engine.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
