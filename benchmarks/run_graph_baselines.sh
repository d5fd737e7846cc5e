#!/usr/bin/env bash
# Float32 baselines of the graph-level tasks on a machine with CUDA GPUs:
# GIN on REDDIT-BINARY (10-fold CV, the folds run side by side) and GIN and GCN on ZINC (MAE).
#
#   bash benchmarks/run_graph_baselines.sh DATA_ROOT WORK_DIR
#
# SECONDS_LEFT stops every run with SIGINT in time (each saves last.pt and an interrupted
# metrics.json); running the script again on the same WORK_DIR keeps the finished runs and
# resumes the others. WORK_DIR/reddit_binary_gin_fp32/metrics.json holds the CV summary once
# all folds are done. TASKS (default "reddit zinc") picks the tasks; REDDIT_SET holds extra
# --set overrides for REDDIT-BINARY (e.g. "model.dropout=0 model.head_dropout=0.5").
set -uo pipefail
DATA=$1
WORK=$2
PY=${PYTHON:-python3}
LEFT=${SECONDS_LEFT:-86400}
GPUS=$($PY -c "import torch; print(max(torch.cuda.device_count(), 1))")
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1

finished() { [ -f "$1/metrics.json" ] && grep -q '"interrupted": false' "$1/metrics.json"; }

launch() {  # GPU OUT CONFIG [--set ...]
    local gpu=$1 out=$2 config=$3
    shift 3
    finished "$out" && return
    local resume=()
    [ -f "$out/last.pt" ] && resume=(--resume)
    mkdir -p "$out"
    CUDA_VISIBLE_DEVICES=$gpu timeout -s INT -k 20 "$LEFT" $PY train.py --config "$config" --device cuda \
        --data-root "$DATA" --out "$out" --quiet "${resume[@]}" "$@" >"$out.log" 2>&1 &
}

TASKS=${TASKS:-reddit zinc}
reddit_set=()
for kv in ${REDDIT_SET:-}; do reddit_set+=(--set "$kv"); done
i=0
if [[ " $TASKS " == *" reddit "* ]]; then
    for fold in $(seq 0 9); do
        launch $((i++ % GPUS)) "$WORK/reddit_binary_gin_fp32/fold_$fold" configs/reddit_binary_gin_fp32.yaml \
            --set data.fold=$fold "${reddit_set[@]}"
    done
fi
if [[ " $TASKS " == *" zinc "* ]]; then
    for arch in gin gcn; do
        launch $((i++ % GPUS)) "$WORK/zinc_${arch}_fp32" "configs/zinc_${arch}_fp32.yaml"
    done
fi
wait
if [[ " $TASKS " == *" reddit "* ]]; then
    done_folds=0
    for fold in $(seq 0 9); do finished "$WORK/reddit_binary_gin_fp32/fold_$fold" && done_folds=$((done_folds + 1)); done
    if [ "$done_folds" -eq 10 ]; then  # the CV run finds every fold done and writes the summary
        $PY train.py --config configs/reddit_binary_gin_fp32.yaml --device cuda --data-root "$DATA" \
            --out "$WORK/reddit_binary_gin_fp32" --resume --quiet "${reddit_set[@]}" >"$WORK/reddit_summary.log" 2>&1
    else
        echo "REDDIT-BINARY: $done_folds of 10 folds finished; run again to continue"
    fi
fi
for m in "$WORK"/zinc_*/metrics.json "$WORK"/reddit_binary_gin_fp32/metrics.json; do
    [ -f "$m" ] && $PY -c "
import json, sys
m = json.load(open(sys.argv[1]))
print(sys.argv[1], 'test', m.get('test_metric'), '+-', m.get('test_std'), 'val', m.get('val_metric'),
      'epochs', m.get('epochs_run'), 'interrupted', m.get('interrupted'), 's/epoch', m.get('seconds_per_epoch'))" "$m"
done
