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
PY=${PYTHON:-python3}
ROOT="$OUT/arxiv_root"
mkdir -p "$OUT"
if [ ! -d "$ROOT/ogbn_arxiv" ]; then
    $PY -c "from qgnn.data.ogb import write_synthetic_ogb as w; w('$ROOT', 'ogbn_arxiv', 169343, 1166243, 128, 40, seed=0)"
fi
Q=(--set quant.method=qat --set quant.weight_bits=4 --set quant.act_bits=4)
run() {  # NAME [--set ...]
    local name=$1
    shift
    $PY benchmarks/bench_train_epoch.py --config configs/ogbn_arxiv_gcn_fp32.yaml --device cuda \
        --data-root "$ROOT" --set data.name=ogbn_arxiv --epochs "$EPOCHS" "${Q[@]}" "$@" \
        --out "$OUT/arxiv_$name.json" >/dev/null
}
run none
run lorap --set prompt.aggregation=lorap
run gpf_plus --set prompt.node=gpf_plus
run gpf_lorap --set prompt.node=gpf_plus --set prompt.aggregation=lorap
run gpf_lorap_torch --set prompt.node=gpf_plus --set prompt.aggregation=lorap --set prompt.fused=false
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
