"""Aggregation with the in-kernel LoRAP epilogue under register caps: does capping registers
keep the latency-bound gather's occupancy, so the epilogue costs little? Power-law graph of
ogbn-arxiv size (169,343 nodes, GCN weights, self-loops), d=256, k=40, r=2, tf32 off, one GPU.
Rows: registers and spills of the compiled kernel, median time over round-robin rounds, and
the epilogue's time over the aggregation alone at the same block; the separate streamed LoRAP
pass (the default path) for comparison.

    python benchmarks/experiments/agg_epilogue_occupancy.py      # JSON to $OUT or /tmp
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from bench_kernels import QUICK_GRAPH, lorap_params, power_law_graph  # noqa: E402
from qgnn.kernels import aggregate as agg  # noqa: E402
from qgnn.kernels import lorap as lk  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
# (BLOCK_M, warps, maxnreg)
BLOCKS = [(16, 8, None), (16, 8, 64), (16, 8, 96), (16, 8, 128), (16, 4, None), (16, 4, 96),
          (16, 4, 128), (32, 4, None), (32, 4, 128), (32, 8, 96)]


def main():
    rounds = int(os.environ.get("ROUNDS", 3))
    graph = power_law_graph(**QUICK_GRAPH).gcn_norm(add_self_loops=True)
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    x = torch.randn(graph.num_nodes, 256, device="cuda")
    params = lorap_params(256, 40, 2)
    ref = agg.csr_aggregate_lorap_reference(graph.indptr, graph.indices, w.double(), x.double(), "sum",
                                            *(p.double() for p in params))
    rows = {}
    fns = {}
    for bm, nw, cap in BLOCKS:
        for epi in (False, True):
            name = f"{'epilogue' if epi else 'agg only'} BLOCK_M={bm} warps={nw} maxnreg={cap}"
            f = (lambda bm=bm, nw=nw, cap=cap, epi=epi: agg.aggregate_triton(
                plan, w, x, "sum", tuple(params) if epi else None, block_m=bm, num_warps=nw, maxnreg=cap)[0])
            try:
                out = f()
            except Exception as exc:  # noqa: BLE001
                rows[name] = {"error": repr(exc)[:300]}
                continue
            row = {"times_us": []}
            if epi:
                row["rel_err"] = float((out.double() - ref).norm() / ref.norm())
            rows[name] = row
            fns[name] = f
    fns["agg then streamed LoRAP (default)"] = lambda: lk.lorap_forward_triton(
        agg.aggregate_triton(plan, w, x, "sum")[0], *params)
    rows["agg then streamed LoRAP (default)"] = {"times_us": []}
    for _ in range(rounds):
        for name, f in fns.items():
            rows[name]["times_us"].append(do_bench(f, warmup=10, rep=100) * 1e3)
    for name, row in rows.items():
        row["us"] = statistics.median(row["times_us"]) if row.get("times_us") else float("nan")
    for bm, nw, cap in BLOCKS:
        a = rows.get(f"agg only BLOCK_M={bm} warps={nw} maxnreg={cap}", {})
        e = rows.get(f"epilogue BLOCK_M={bm} warps={nw} maxnreg={cap}", {})
        if "us" in a and "us" in e:
            e["vs_agg_only_same_block"] = e["us"] / a["us"]
    base = rows["agg only BLOCK_M=16 warps=8 maxnreg=None"]["us"]
    for name, row in rows.items():
        print(f"{name:50s} {row.get('us', float('nan')):8.1f} us  x{row.get('us', float('nan')) / base:5.2f} of the "
              f"shipped aggregation  {row.get('vs_agg_only_same_block', '')} err {row.get('rel_err', row.get('error', ''))}",
              flush=True)
    res = {"device": torch.cuda.get_device_name(), "rounds": rounds, "rows": rows}
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "agg_epilogue_occupancy.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
