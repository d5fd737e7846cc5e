#!/usr/bin/env bash
# Set everything up, then train the default config (Cora GCN, float32) and print its metrics.
# Extra arguments go to train.py, e.g.: bash scripts/train.sh --config configs/cora_gat_fp32.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ "$#" -eq 0 ]; then
    set -- --config configs/cora_gcn_fp32.yaml --out runs/cora_gcn_fp32
fi
exec .venv/bin/python train.py "$@"
