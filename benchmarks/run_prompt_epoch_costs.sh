#!/usr/bin/env bash
# Epoch time of a W4A4 GCN (vanilla QAT) at ogbn-arxiv size with each prompt, on one CUDA GPU:
# no prompt, LoRAP alone, GPF-plus alone, GPF-LoRAP (fused Triton LoRAP) and GPF-LoRAP as
# torch ops. Writes OUT/arxiv_<variant>.json (benchmarks/bench_train_epoch.py) and prints
# a table with the overhead of each prompt against no prompt.
#
#   bash benchmarks/run_prompt_epoch_costs.sh OUT [EPOCHS]
#
# The synthetic dataset (169,343 nodes, 1,166,243 edges, 128 features, 40 classes, OGB's raw
# layout) is written once to OUT/arxiv_root.
set -euo pipefail
OUT=$1
EPOCHS=${2:-20}
PREFIX=arxiv
source "$(dirname "$0")/arxiv_epoch_common.sh"
Q=(--set quant.method=qat --set quant.weight_bits=4 --set quant.act_bits=4)
run none "${Q[@]}"
run lorap "${Q[@]}" --set prompt.aggregation=lorap
run gpf_plus "${Q[@]}" --set prompt.node=gpf_plus
run gpf_lorap "${Q[@]}" --set prompt.node=gpf_plus --set prompt.aggregation=lorap
run gpf_lorap_torch "${Q[@]}" --set prompt.node=gpf_plus --set prompt.aggregation=lorap --set prompt.fused=false
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {n: json.loads((out / f"arxiv_{n}.json").read_text())
        for n in ("none", "lorap", "gpf_plus", "gpf_lorap", "gpf_lorap_torch")}
base = rows["none"]["seconds_per_epoch"]
print(f"{rows['none']['device']}; W4A4 GCN (QAT) at ogbn-arxiv size, median s / epoch")
for name, r in rows.items():
    t = r["seconds_per_epoch"]
    print(f"  {name:16s} {t * 1e3:8.2f} ms  {100 * (t / base - 1):+6.1f}%  "
          f"peak {r['peak_memory_bytes'] / 1e9:.2f} GB  params {r['parameters']:,}")
PYEOF
