# Shared by run_prompt_epoch_costs.sh and run_agg_epoch_costs.sh (sourced, not run): reads
# OUT (and optional EPOCHS, PYTHON), writes the synthetic ogbn-arxiv-size dataset (169,343
# nodes, 1,166,243 edges, 128 features, 40 classes, OGB's raw layout) once to
# OUT/arxiv_root, and defines run NAME [--set ...]: time
# configs/ogbn_arxiv_gcn_fp32.yaml on it with benchmarks/bench_train_epoch.py into
# OUT/<PREFIX>_NAME.json.
EPOCHS=${EPOCHS:-20}
PY=${PYTHON:-python3}
ROOT="$OUT/arxiv_root"
mkdir -p "$OUT"
if [ ! -d "$ROOT/ogbn_arxiv" ]; then
    $PY -c "from qgnn.data.ogb import write_synthetic_ogb as w; w('$ROOT', 'ogbn_arxiv', 169343, 1166243, 128, 40, seed=0)"
fi
run() {  # NAME [--set ...]
    local name=$1
    shift
    $PY benchmarks/bench_train_epoch.py --config configs/ogbn_arxiv_gcn_fp32.yaml --device cuda \
        --data-root "$ROOT" --set data.name=ogbn_arxiv --epochs "$EPOCHS" "$@" \
        --out "$OUT/${PREFIX}_$name.json" >/dev/null
}
