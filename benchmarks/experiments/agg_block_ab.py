"""The CSR aggregation's block of segments a program (``AGG_BLOCK_M`` rows, ``AGG_WARPS``,
``AGG_UNROLL``), A/B on one GPU. Power-law graph of ogbn-arxiv size (169,343 nodes, GCN
weights, self-loops), tf32 off.

Cases: float32 rows at d = 256, 128, 64, 40 (forward, and the backward's pass over the
transposed graph); packed codes at d = 256 (int8 / int4 / int2 per tensor, int4 per row).
Each block is timed in round-robin rounds (``do_bench`` medians) and checked bitwise against
the library's block (each row sums its edges in the same order whatever the block).

    python benchmarks/experiments/agg_block_ab.py      # JSON to $OUT or /tmp
    BLOCKS="[[16, 8, 2], [8, 8, 2]]" ROUNDS=5 python benchmarks/experiments/agg_block_ab.py
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from bench_kernels import QUICK_GRAPH, power_law_graph  # noqa: E402
from qgnn.kernels import aggregate as agg  # noqa: E402
from qgnn.kernels.lowbit import CodeGrid, pack_rows  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
BLOCKS = [tuple(b) for b in json.loads(os.environ.get(
    "BLOCKS", "[[16, 8, 2], [8, 8, 2], [8, 8, 4], [8, 4, 2], [4, 4, 2]]"))]
PACKED = {  # name: (bits, qmin, qmax, granularity)
    "int8 per-tensor": (8, -128, 127, "per_tensor"),
    "int4 per-tensor": (4, -8, 7, "per_tensor"),
    "int2 per-tensor": (2, -2, 1, "per_tensor"),
    "int4 per-row": (4, -8, 7, "per_row"),
}


def packed_input(n, d, bits, qmin, qmax, granularity, gen):
    shape = (n,) if granularity == "per_row" else ()
    scale = torch.rand(shape, generator=gen, device="cuda") * 0.1 + 0.01
    zero = torch.randint(qmin, qmax + 1, shape, generator=gen, device="cuda").float()
    codes = torch.randint(qmin, qmax + 1, (n, d), generator=gen, device="cuda").float()
    s, z = (scale[:, None], zero[:, None]) if granularity == "per_row" else (scale, zero)
    return pack_rows(((codes - z) * s).contiguous(), CodeGrid(scale, zero, qmin, qmax, granularity))


def main():
    rounds = int(os.environ.get("ROUNDS", 3))
    graph = power_law_graph(**QUICK_GRAPH).gcn_norm(add_self_loops=True)
    n = graph.num_nodes
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    plan_t, w_t = agg._backward_weights(plan, w, "sum")
    gen = torch.Generator(device="cuda").manual_seed(0)
    cases = {}
    for d in (256, 128, 64, 40):
        x = torch.randn(n, d, device="cuda", generator=gen)
        cases[f"float d={d} forward"] = (plan, w, x)
        cases[f"float d={d} backward (transposed)"] = (plan_t, w_t, x)
    for name, spec in PACKED.items():
        cases[f"{name} d=256 forward"] = (plan, w, packed_input(n, 256, *spec, gen))
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rounds": rounds,
           "blocks": BLOCKS, "cases": {}}
    for case, (p, wt, x) in cases.items():
        fns, row = {}, {}
        ref = agg.aggregate_triton(p, wt, x, "sum", block_m=BLOCKS[0][0], num_warps=BLOCKS[0][1],
                                   unroll=BLOCKS[0][2])[0]
        for bm, nw, un in BLOCKS:
            key = f"block_m={bm} warps={nw} unroll={un}"
            fns[key] = (lambda bm=bm, nw=nw, un=un: agg.aggregate_triton(
                p, wt, x, "sum", block_m=bm, num_warps=nw, unroll=un)[0])
            row[key] = {"bitwise_equal": bool(torch.equal(fns[key](), ref)), "times_us": []}
        for _ in range(rounds):
            for key, f in fns.items():
                row[key]["times_us"].append(do_bench(f, warmup=10, rep=100) * 1e3)
        base = None
        for key, r in row.items():
            r["us"] = statistics.median(r["times_us"]) if r["times_us"] else float("nan")
            base = base or r["us"]
            print(f"{case:40s} {key:32s} {r['us']:8.1f} us  x{r['us'] / base:5.3f}"
                  f"  equal {r['bitwise_equal']}", flush=True)
        res["cases"][case] = row
    path = os.path.join(os.environ.get("OUT", "/tmp"), "agg_block_ab.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
