#!/usr/bin/env bash
# CPU cost on Cora GCN at W4A4: seconds per training epoch of each QAT framework (float32 as
# reference) and of each prompt variant on vanilla QAT, with the parameter counts.
#
#   bash benchmarks/run_cpu_costs.sh DATA_ROOT OUT_DIR [THREADS]
#
# One run at a time (nothing else should load the machine); median of 30 epochs after 3
# warm-up epochs (benchmarks/bench_train_epoch.py). MixQ is timed in its search phase (its
# first 50 epochs, every candidate width evaluated), its costliest part.
set -euo pipefail
DATA=$1
OUT=$2
THREADS=${3:-2}
PY=${PYTHON:-python}
mkdir -p "$OUT"
bench() {  # NAME CONFIG [--set ...]
    local name=$1 config=$2
    shift 2
    $PY benchmarks/bench_train_epoch.py --config "$config" --device cpu --threads "$THREADS" \
        --epochs 30 --data-root "$DATA" --out "$OUT/$name.json" "$@" >/dev/null
}
bench fp32 configs/cora_gcn_fp32.yaml
for m in qat dq a2q mixq; do bench "$m" "configs/cora_gcn_$m.yaml"; done
bench qat_gpfplus configs/cora_gcn_qat.yaml --set prompt.node=gpf_plus
bench qat_lorap configs/cora_gcn_qat.yaml --set prompt.aggregation=lorap
bench qat_gpf_lorap configs/cora_gcn_qat.yaml --set prompt.node=gpf_plus --set prompt.aggregation=lorap
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
# frameworks against float32, prompt variants against vanilla QAT without a prompt
lines = ["| run | s / epoch | ratio | parameters | extra parameters |", "|---|---:|---:|---:|---:|"]
for name in ("fp32", "qat", "dq", "a2q", "mixq", "qat_gpfplus", "qat_lorap", "qat_gpf_lorap"):
    if name not in rows:
        continue
    r = rows[name]
    prompted = name.startswith("qat_")
    ref = rows["qat" if prompted else "fp32"]
    extra = f"{r['parameters'] - ref['parameters']:,}" if prompted else ""
    lines.append(f"| {name} | {r['seconds_per_epoch']:.4f} | {r['seconds_per_epoch'] / ref['seconds_per_epoch']:.2f}x | "
                 f"{r['parameters']:,} | {extra} |")
dq, qat = rows.get("dq"), rows.get("qat")
if dq and qat:
    lines.append(f"\nDQ / vanilla QAT: {dq['seconds_per_epoch'] / qat['seconds_per_epoch']:.2f}x (target <= 2x).")
(out / "cpu_costs.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
