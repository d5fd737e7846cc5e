#!/usr/bin/env bash
# The GPU measurements behind docs/results.md, in one go on a machine with CUDA GPUs.
#
#   bash benchmarks/run_gpu_suite.sh DATA_ROOT OUT_DIR [STEP ...]
#
# Steps (default: all, in this order):
#   env     versions and device
#   train   Cora GCN/GAT/GIN float32 with --device cuda (seconds per epoch)
#   arxiv   epoch time and peak memory on a synthetic graph of ogbn-arxiv's size:
#           GCN fp32, the A2Q example config, and W4A4 QAT GCN with no prompt /
#           GPF-LoRAP (fused kernel) / GPF-LoRAP (torch ops)
#   grid    the QAT accuracy grids (configs/sweeps/qat_planetoid_*.yaml) on all GPUs
#   sweeps  the sweep files listed in SWEEPS (paths, space-separated)
#   prompts the prompt recovery grids (configs/sweeps/prompts_planetoid_*.yaml) and the
#           LoRAP k x r sensitivity sweep (configs/sweeps/lorap_sensitivity.yaml)
# JOBS (default 12) runs share the GPUs during grids. Results: OUT_DIR/*.json, *.md and
# OUT_DIR/runs.tgz (every metrics.json; no checkpoints).
# Long grids can be split over several sessions: SECONDS_LEFT stops the sweeps in time to
# pack what finished, and PREV_RUNS=runs.tgz (a previous OUT_DIR/runs.tgz) restores those
# runs first, so that only the missing (config, seed) pairs run. Tables of partly finished
# sweeps: python sweep.py --sweep S --out DIR --report-only.
set -uo pipefail
DATA=$1
OUT=$2
shift 2
STEPS=${*:-env train arxiv grid prompts}
PY=${PYTHON:-python3}
JOBS=${JOBS:-12}
WORK=${WORK:-/tmp/qgnn-gpu-suite}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 DGLBACKEND=pytorch
status=0
END=$(( $(date +%s) + ${SECONDS_LEFT:-86400} - 30 ))  # 30 s to pack the results
if [ -n "${PREV_RUNS:-}" ] && [ -f "$PREV_RUNS" ]; then
    tar xzf "$PREV_RUNS" -C "$WORK" && echo "restored $(tar tzf "$PREV_RUNS" | wc -l) runs from $PREV_RUNS"
fi

step_env() {
    $PY -c "import torch, triton, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'triton', triton.__version__, 'gpus', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
}

step_train() {
    for arch in gcn gat gin; do
        $PY train.py --config "configs/cora_${arch}_fp32.yaml" --device cuda --quiet \
            --data-root "$DATA" --out "$WORK/train/cora_${arch}_fp32" >/dev/null || status=1
    done
    $PY - "$WORK/train" "$OUT/train_cuda.json" <<'EOF'
import json, sys
from pathlib import Path
rows = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*/metrics.json"))}
keep = ("test_metric", "val_metric", "best_epoch", "seconds_per_epoch", "device", "seed", "versions")
Path(sys.argv[2]).write_text(json.dumps({k: {f: v[f] for f in keep} for k, v in rows.items()}, indent=2))
for k, v in rows.items():
    print(f"{k}: test {v['test_metric']:.2f}  s/epoch {v['seconds_per_epoch']:.4f}  {v['device']}")
EOF
}

step_arxiv() {
    local root="$WORK/arxiv_root"
    if [ ! -d "$root/ogbn_arxiv" ]; then
        $PY -c "from qgnn.data.ogb import write_synthetic_ogb as w; w('$root', 'ogbn_arxiv', 169343, 1166243, 128, 40, seed=0)" || status=1
    fi
    bench() {  # NAME CONFIG [--set ...]
        local name=$1 config=$2
        shift 2
        $PY benchmarks/bench_train_epoch.py --config "$config" --device cuda --data-root "$root" \
            --set data.name=ogbn_arxiv --epochs 20 --out "$OUT/arxiv_${name}.json" "$@" || status=1
    }
    bench gcn_fp32 configs/ogbn_arxiv_gcn_fp32.yaml
    bench a2q configs/ogbn_arxiv_a2q.yaml
    local q=(--set quant.method=qat --set quant.weight_bits=4 --set quant.act_bits=4)
    bench gcn_w4a4_none configs/ogbn_arxiv_gcn_fp32.yaml "${q[@]}"
    bench gcn_w4a4_gpf_lorap_fused configs/ogbn_arxiv_gcn_fp32.yaml "${q[@]}" \
        --set prompt.node=gpf_plus --set prompt.aggregation=lorap --set prompt.fused=true
    bench gcn_w4a4_gpf_lorap_torch configs/ogbn_arxiv_gcn_fp32.yaml "${q[@]}" \
        --set prompt.node=gpf_plus --set prompt.aggregation=lorap --set prompt.fused=false
}

step_grid() { run_sweeps configs/sweeps/qat_planetoid_*.yaml; }
step_sweeps() { run_sweeps ${SWEEPS:-}; }
step_prompts() { run_sweeps configs/sweeps/prompts_planetoid_*.yaml configs/sweeps/lorap_sensitivity.yaml; }

run_sweeps() {
    for sweep in "$@"; do
        local name left
        name=$(basename "$sweep" .yaml)
        left=$(( END - $(date +%s) ))
        if [ "$left" -le 10 ]; then echo "no time left for $name"; status=1; continue; fi
        # --kill-after: the pool's workers go down with the sweep; finished runs stay on disk
        timeout --kill-after=5 "$left" $PY sweep.py --sweep "$sweep" --device cuda --jobs "$JOBS" \
            --data-root "$DATA" --out "$WORK/sweeps/$name" --table "$OUT/$name.md" >"$WORK/$name.log" 2>&1 \
            || { status=1; echo "$name stopped early: $(tail -1 "$WORK/$name.log")"; pkill -f "sweep.py --sweep $sweep"; pkill -f "multiprocessing.spawn"; sleep 2; }
        tail -3 "$WORK/$name.log"
    done
}

for step in $STEPS; do
    echo "== $step"
    "step_$step"
done
(cd "$WORK" && find . -name metrics.json -print0 | tar czf "$OUT/runs.tgz" --null -T -)
echo "packed $(tar tzf "$OUT/runs.tgz" | wc -l) runs"

exit $status
