#!/usr/bin/env bash
# Epoch time of a GCN at ogbn-arxiv size (3 layers, hidden 256) with each GPU path, on one
# CUDA GPU, in float32 and with vanilla QAT at W8A8 and W4A4. Variants, each a config switch:
#   torch         torch.sparse aggregation and fake quantization as torch ops (the old path)
#   triton_float  the Triton CSR kernel on float32 rows (model.agg_kernel=triton)
#   triton_lowbit ... gathering the feature quantizer's packed codes (quant.low_bit_gather)
#   fused_fq      torch.sparse, fake quantization as one Triton pass (quant.fused_fake_quant)
#   default       all of them (the defaults)
# Writes OUT/agg_<variant>.json (benchmarks/bench_train_epoch.py) and prints a table of train
# and eval times.
#
#   bash benchmarks/run_agg_epoch_costs.sh OUT [EPOCHS]
#
# The synthetic dataset (169,343 nodes, 1,166,243 edges, 128 features, 40 classes, OGB's
# raw layout) is written once to OUT/arxiv_root.
set -euo pipefail
OUT=$1
EPOCHS=${2:-20}
PREFIX=agg
source "$(dirname "$0")/arxiv_epoch_common.sh"
AGG_TORCH=(--set model.agg_kernel=torch)
AGG_TRITON=(--set model.agg_kernel=triton)
NO_LOWBIT=(--set quant.low_bit_gather=false)
NO_FQ=(--set quant.fused_fake_quant=false)
run fp32_torch "${AGG_TORCH[@]}"
run fp32_default
for b in 8 4; do
    Q=(--set quant.method=qat --set quant.weight_bits=$b --set quant.act_bits=$b)
    run "w${b}a${b}_torch" "${Q[@]}" "${AGG_TORCH[@]}" "${NO_FQ[@]}"
    run "w${b}a${b}_triton_float" "${Q[@]}" "${AGG_TRITON[@]}" "${NO_LOWBIT[@]}" "${NO_FQ[@]}"
    run "w${b}a${b}_triton_lowbit" "${Q[@]}" "${AGG_TRITON[@]}" "${NO_FQ[@]}"
    run "w${b}a${b}_fused_fq" "${Q[@]}" "${AGG_TORCH[@]}"
    run "w${b}a${b}_default" "${Q[@]}"
done
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
names = ["fp32_torch", "fp32_default"] + [f"w{b}a{b}_{k}" for b in (8, 4) for k in
                                          ("torch", "triton_float", "triton_lowbit", "fused_fq", "default")]
rows = {n: json.loads((out / f"agg_{n}.json").read_text()) for n in names}
print(f"{rows['fp32_torch']['device']}; GCN at ogbn-arxiv size, median ms per train epoch / eval")
for name, r in rows.items():
    base = rows[name.split("_")[0] + "_torch"]
    print(f"  {name:22s} train {r['seconds_per_epoch'] * 1e3:8.2f} ms "
          f"({base['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}x torch)  eval "
          f"{r['eval_seconds'] * 1e3:7.2f} ms ({base['eval_seconds'] / r['eval_seconds']:.2f}x)  "
          f"peak {r['peak_memory_bytes'] / 1e9:.2f} GB")
PYEOF
