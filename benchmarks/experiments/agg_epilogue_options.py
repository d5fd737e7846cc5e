"""Aggregation with the in-kernel LoRAP epilogue, by block shape and epilogue option, against
the same aggregation without it. Power-law graph of ogbn-arxiv size (169,343 nodes, GCN
weights, self-loops), d=256, k=40, r=2, tf32 off, one GPU.

Options (``aggregate_triton`` keyword arguments): ``epi_split_w`` (``W_a`` as bfloat16 parts
split once a call, three bf16 products, instead of ``tl.dot``'s bf16x3 splitting each tile),
``epi_stages`` (the score chunk loop software-pipelined), and the block (``block_m`` rows,
``num_warps``, ``unroll``) and register cap (``maxnreg``); the aggregation alone runs at the
same block.
Each row: registers and spills of the compiled kernel(s), median over round-robin rounds
(``do_bench``), the epilogue's time over the aggregation alone at the same block, and its
relative error against float64; the library's path (aggregation, then the streamed LoRAP
pass) for comparison.

    python benchmarks/experiments/agg_epilogue_options.py      # JSON to $OUT or /tmp
    CONFIGS='[[{}, {}], [{}, {"epi_stages": 2}]]' python benchmarks/experiments/agg_epilogue_options.py
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
from qgnn.kernels import _triton_kernels as tk  # noqa: E402
from qgnn.kernels import aggregate as agg  # noqa: E402
from qgnn.kernels import lorap as lk  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
BLOCK = {"block_m": 16, "num_warps": 8, "unroll": 2}  # the base block (the library now: 4 warps)
CONFIGS = [  # (block, epilogue options)
    ({}, {"epi_split_w": False, "epi_stages": 1}),
    ({}, {"epi_split_w": True, "epi_stages": 1}),
    ({}, {"epi_split_w": False, "epi_stages": 2}),
    ({}, {"epi_split_w": True, "epi_stages": 2}),
    ({}, {"epi_split_w": True, "epi_stages": 3}),
    ({}, {"epi_split_w": True, "epi_stages": 4}),
    ({"block_m": 8}, {"epi_split_w": True, "epi_stages": 3}),
    ({"num_warps": 4}, {"epi_split_w": True, "epi_stages": 3}),
    ({"maxnreg": 80}, {"epi_split_w": True, "epi_stages": 3}),
]
if os.environ.get("CONFIGS"):  # JSON list of [block, options]
    CONFIGS = [tuple(c) for c in json.loads(os.environ["CONFIGS"])]


def compiled_kernels():
    """Ids and (registers, spills) of every compiled ``csr_agg_kernel`` so far."""
    found = {}
    for cache in getattr(tk.csr_agg_kernel, "device_caches", {}).values():
        kernels = cache[0] if isinstance(cache, tuple) else cache
        for kern in getattr(kernels, "values", lambda: [])():
            found[id(kern)] = (getattr(kern, "n_regs", None), getattr(kern, "n_spills", None))
    return found


def main():
    rounds = int(os.environ.get("ROUNDS", 3))
    graph = power_law_graph(**QUICK_GRAPH).gcn_norm(add_self_loops=True)
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    x = torch.randn(graph.num_nodes, 256, device="cuda")
    params = tuple(lorap_params(256, 40, 2))
    ref = agg.csr_aggregate_lorap_reference(graph.indptr, graph.indices, w.double(), x.double(),
                                            "sum", *(p.double() for p in params))
    rows, fns = {}, {}
    for block, options in CONFIGS:
        block = {**BLOCK, **block}
        tag = " ".join(f"{k}={v}" for k, v in block.items())
        for name, lorap, opts in ((f"agg only {tag}", None, {}),
                                  (f"epilogue {tag} {options or ''}", params, options)):
            if name in rows:
                continue
            f = (lambda lorap=lorap, opts=opts, block=block:
                 agg.aggregate_triton(plan, w, x, "sum", lorap, **block, **opts)[0])
            before = compiled_kernels()
            try:
                out = f()
                torch.cuda.synchronize()
            except Exception as exc:  # noqa: BLE001
                rows[name] = {"error": repr(exc)[:300]}
                continue
            new = [v for k, v in compiled_kernels().items() if k not in before]
            rows[name] = {"times_us": [], "regs_spills": new}
            if lorap is not None:
                rows[name]["rel_err"] = float((out.double() - ref).norm() / ref.norm())
                rows[name]["agg_only"] = f"agg only {tag}"
            fns[name] = f
    fns["agg then streamed LoRAP (library)"] = lambda: lk.lorap_forward_triton(
        agg.aggregate_triton(plan, w, x, "sum")[0], *params)
    rows["agg then streamed LoRAP (library)"] = {"times_us": []}
    for _ in range(rounds):
        for name, f in fns.items():
            rows[name]["times_us"].append(do_bench(f, warmup=10, rep=100) * 1e3)
    for row in rows.values():
        row["us"] = statistics.median(row["times_us"]) if row.get("times_us") else float("nan")
    for row in rows.values():
        if "agg_only" in row and "us" in rows.get(row["agg_only"], {}):
            row["vs_agg_only_same_block"] = row["us"] / rows[row["agg_only"]]["us"]
    for name, row in rows.items():
        ratio = row.get("vs_agg_only_same_block", float("nan"))
        print(f"{name:95s} {row['us']:8.1f} us  x{ratio:5.2f}  regs {row.get('regs_spills', '')}"
              f"  err {row.get('rel_err', row.get('error', ''))}", flush=True)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rounds": rounds,
           "rows": rows}
    path = os.path.join(os.environ.get("OUT", "/tmp"), "agg_epilogue_options.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
