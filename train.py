"""Train a GNN: ``python train.py --config configs/cora_gcn_fp32.yaml [--set k=v] [--out DIR]``."""

import sys

from qgnn.engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
