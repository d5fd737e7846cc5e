#!/usr/bin/env bash
# A/B epoch time of two source trees on one CUDA GPU: the GCN of
# configs/ogbn_arxiv_gcn_fp32.yaml (3 layers, hidden 256) on a synthetic ogbn-arxiv-size
# dataset, run by each tree's own benchmarks/bench_train_epoch.py, alternating A B A B ... so
# that drift of the machine hits both alike. Prints the median over rounds of each tree's
# median epoch; writes OUT/ab/<tree>_<mode>_<round>.json and OUT/ab_summary.json.
#
#   git worktree add /tmp/base <commit>
#   bash benchmarks/run_ab_epoch.sh /tmp/base OUT [ROUNDS] [MODES...]
#
# MODES: fp32, w4a4, w8a8 (vanilla QAT), lorap (W4A4 with GPF-plus + LoRAP) or lorap_alone
# (W4A4 with LoRAP only); default "w4a4 fp32". "base" is the given tree, "head" this one.
# DEVICE (default cuda), SIZE (NODES,EDGES,FEATURES,CLASSES; default ogbn-arxiv's) and EPOCHS
# (default 20) change the setting (the tests run it on the CPU at a tiny size). PROFILE=1 also
# profiles one train epoch per run (torch.profiler, OUT/ab/<run>.prof.txt) and reports its
# total kernel time ("Self CUDA time total"; the CPU total on the CPU): on a host-bound GPU
# the wall-clock epoch drifts by several percent between runs of the same code, the kernel
# time by well under one.
set -euo pipefail
BASE=$1
OUT=$2
ROUNDS=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(w4a4 fp32)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-169343,1166243,128,40}
EPOCHS=${EPOCHS:-20}
HEAD=$(cd "$(dirname "$0")/.." && pwd)
ROOT="$OUT/arxiv_root"
mkdir -p "$OUT/ab"
if [ ! -d "$ROOT/ogbn_arxiv" ]; then
    (cd "$HEAD" && $PY -c "from qgnn.data.ogb import write_synthetic_ogb as w; w('$ROOT', 'ogbn_arxiv', $SIZE, seed=0)")
fi
W4=(--set quant.method=qat --set quant.weight_bits=4 --set quant.act_bits=4)
for r in $(seq 1 "$ROUNDS"); do
    for tree in base head; do
        dir=$HEAD
        [ $tree = base ] && dir=$BASE
        for mode in "${MODES[@]}"; do
            case $mode in
                fp32) Q=() ;;
                w4a4) Q=("${W4[@]}") ;;
                w8a8) Q=(--set quant.method=qat --set quant.weight_bits=8 --set quant.act_bits=8) ;;
                lorap) Q=("${W4[@]}" --set prompt.node=gpf_plus --set prompt.aggregation=lorap) ;;
                lorap_alone) Q=("${W4[@]}" --set prompt.aggregation=lorap) ;;
                *) echo "unknown mode $mode (fp32, w4a4, w8a8, lorap, lorap_alone)" >&2; exit 2 ;;
            esac
            P=()
            [ "${PROFILE:-0}" = 1 ] && P=(--profile "$OUT/ab/${tree}_${mode}_$r.prof.txt")
            (cd "$dir" && $PY benchmarks/bench_train_epoch.py --config configs/ogbn_arxiv_gcn_fp32.yaml \
                --device "$DEVICE" --data-root "$ROOT" --set data.name=ogbn_arxiv --epochs "$EPOCHS" \
                "${Q[@]}" "${P[@]}" \
                --out "$OUT/ab/${tree}_${mode}_$r.json" >/dev/null)
        done
    done
done
$PY - "$OUT" <<'PYEOF'
import collections, glob, json, os, re, statistics, sys
out = sys.argv[1]
UNITS = {"s": 1e3, "ms": 1.0, "us": 1e-3}


def profiled_ms(path):
    """The train epoch's total kernel time (CPU total without CUDA) from a profile, in ms."""
    if not os.path.exists(path):
        return None
    text = open(path).read().split("== evaluation")[0]
    m = re.search(r"Self CUDA time total: ([0-9.]+)(s|ms|us)", text) or \
        re.search(r"Self CPU time total: ([0-9.]+)(s|ms|us)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


runs = collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(out, "ab", "*.json"))):
    parts = os.path.basename(f)[:-5].split("_")
    tree, mode = parts[0], "_".join(parts[1:-1])
    j = json.load(open(f))
    runs[(mode, tree)].append((j["seconds_per_epoch"] * 1e3, j["eval_seconds"] * 1e3, j["device"],
                               profiled_ms(f[:-5] + ".prof.txt")))
summary = {}
for mode in sorted({m for m, _ in runs}):
    row = {}
    for tree in ("base", "head"):
        t = runs[(mode, tree)]
        row[tree] = {"train_ms": statistics.median(v[0] for v in t), "eval_ms": statistics.median(v[1] for v in t),
                     "train_ms_runs": [v[0] for v in t], "eval_ms_runs": [v[1] for v in t]}
        if all(v[3] is not None for v in t):
            row[tree]["profiled_train_ms"] = statistics.median(v[3] for v in t)
            row[tree]["profiled_train_ms_runs"] = [v[3] for v in t]
    row["device"] = runs[(mode, "head")][0][2]
    summary[mode] = row
    b, h = row["base"], row["head"]
    print(f"{mode:6s} train base {b['train_ms']:7.2f} head {h['train_ms']:7.2f} ms ({b['train_ms'] / h['train_ms']:.2f}x)"
          f"  eval base {b['eval_ms']:6.2f} head {h['eval_ms']:6.2f} ms ({b['eval_ms'] / h['eval_ms']:.2f}x)"
          f"  [{row['device']}]")
    if "profiled_train_ms" in b and "profiled_train_ms" in h:
        print(f"{'':6s} profiled kernel time of a train epoch: base {b['profiled_train_ms']:7.2f} "
              f"head {h['profiled_train_ms']:7.2f} ms ({b['profiled_train_ms'] / h['profiled_train_ms']:.3f}x)")
json.dump(summary, open(os.path.join(out, "ab_summary.json"), "w"), indent=1)
PYEOF
