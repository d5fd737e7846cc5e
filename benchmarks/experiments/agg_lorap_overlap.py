"""Aggregation + LoRAP with the destination rows cut into ``CHUNKS`` ranges of equal edge
counts: each range is aggregated on the current stream and its LoRAP pass runs on a second
stream once that range is written, so that one range's LoRAP pass (bandwidth-bound) can run
beside the next range's aggregation (a latency-bound gather). Power-law graph of ogbn-arxiv
size (GCN-normalised, self-loops), d=256, k=40, r=2, tf32 off, on one GPU; median of ROUNDS
interleaved ``do_bench`` runs of:

- the aggregation alone, and aggregation then the streamed LoRAP (the library's path);
- for each chunk count: chunks on one stream, and on two streams with the LoRAP stream at
  normal and at high priority (the block scheduler then favours its blocks);

with each variant's largest difference from the library's path.

    python benchmarks/experiments/agg_lorap_overlap.py      # JSON to $OUT or /tmp
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
from qgnn.kernels import lorap as L  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
CHUNKS = [int(c) for c in os.environ.get("CHUNKS", "2,4,8,16").split(",")]


def row_ranges(indptr, chunks):
    """``chunks`` ranges of destination rows holding about equal numbers of edges."""
    e = int(indptr[-1])
    cuts = torch.searchsorted(indptr, torch.linspace(0, e, chunks + 1, device=indptr.device)[1:-1])
    bounds = [0] + sorted(set(int(c) for c in cuts.tolist())) + [indptr.numel() - 1]
    return list(zip(bounds[:-1], bounds[1:]))


def sub_plans(graph, w, ranges):
    plans = []
    for r0, r1 in ranges:
        e0, e1 = int(graph.indptr[r0]), int(graph.indptr[r1])
        plan = agg.CSRPlan((graph.indptr[r0:r1 + 1] - e0).contiguous(),
                           graph.indices[e0:e1].contiguous())
        plans.append((r0, r1, plan, w[e0:e1].contiguous()))
    return plans


def chunked(x, params, plans, side):
    """Aggregate each row range, then its LoRAP pass (on ``side`` when given)."""
    main = torch.cuda.current_stream()
    out = torch.empty(x.shape[0], x.shape[1], device=x.device)
    if side is not None:
        side.wait_stream(main)
    for r0, r1, plan, w in plans:
        s = agg.aggregate_triton(plan, w, x, "sum")[0]
        if side is None:
            L.lorap_forward_triton(s, *params, out=out[r0:r1])
            continue
        done = torch.cuda.Event()
        done.record(main)
        with torch.cuda.stream(side):
            side.wait_event(done)
            L.lorap_forward_triton(s, *params, out=out[r0:r1])
        s.record_stream(side)
    if side is not None:
        main.wait_stream(side)
    return out


def main():
    rounds = int(os.environ.get("ROUNDS", 5))
    d, k, r = 256, 40, 2
    graph = power_law_graph(**QUICK_GRAPH).gcn_norm(add_self_loops=True)
    n = graph.num_nodes
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    x = torch.randn(n, d, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    params = [p.detach() for p in lorap_params(d, k, r)]
    fns = {"agg only": lambda: agg.aggregate_triton(plan, w, x, "sum")[0],
           "agg then LoRAP (library)": lambda: L.lorap_forward_triton(
               agg.aggregate_triton(plan, w, x, "sum")[0], *params)}
    normal, high = torch.cuda.Stream(), torch.cuda.Stream(priority=-1)
    for c in CHUNKS:
        plans = sub_plans(graph, w, row_ranges(graph.indptr, c))
        fns[f"{c} chunks, one stream"] = lambda plans=plans: chunked(x, params, plans, None)
        fns[f"{c} chunks, LoRAP stream normal priority"] = (
            lambda plans=plans: chunked(x, params, plans, normal))
        fns[f"{c} chunks, LoRAP stream high priority"] = (
            lambda plans=plans: chunked(x, params, plans, high))
    ref = fns["agg then LoRAP (library)"]()
    res = {"device": torch.cuda.get_device_name(), "n": n, "e": graph.num_edges, "rounds": rounds,
           "variants": {}}
    for name, f in fns.items():
        got = f()
        torch.cuda.synchronize()
        diff = None if name == "agg only" else float((got - ref).abs().max())
        res["variants"][name] = {"max_abs_diff": diff, "times_us": []}
    for _ in range(rounds):
        for name, f in fns.items():
            res["variants"][name]["times_us"].append(do_bench(f, warmup=10, rep=80) * 1e3)
    base = statistics.median(res["variants"]["agg only"]["times_us"])
    for name, row in res["variants"].items():
        row["us"] = statistics.median(row["times_us"])
        row["vs_agg_only"] = row["us"] / base
        print(f"{name:44s} {row['us']:8.1f} us  {row['vs_agg_only']:.3f}x  diff {row['max_abs_diff']}",
              flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "agg_lorap_overlap.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
