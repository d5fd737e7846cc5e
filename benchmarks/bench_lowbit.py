"""Low-bit gather: the CSR aggregation reading packed 8/4/2-bit codes against float32 rows.

    python benchmarks/bench_lowbit.py --out lowbit.json

On a power-law random graph of ogbn-arxiv's size (169,343 nodes, 1.17M edges drawn,
symmetrised, GCN weights with self-loops) and hidden widths 64, 128 and 256, times (median of
``triton.testing.do_bench``):

- ``torch.sparse.mm`` (cuSPARSE CSR) on the float32 tensor, the baseline the layers used;
- the Triton CSR kernel on the float32 tensor;
- the same kernel gathering the packed codes (per-tensor grids at 8, 4 and 2 bits; per-row
  and per-column grids at 4 bits), and :func:`qgnn.kernels.lowbit.pack_rows`, which a
  training step pays before it;
- the forward + backward of the layer's aggregation (the backward gathers float32 gradients
  over the transposed graph in every case).

The input is a quantizer's output (random codes on the grid), so the packed and float paths
sum the same values: the script checks the packed result against float64 (``torch.sparse.mm``
in float64), reports whether it is bitwise equal to the float32 Triton path, and whether
repeated calls give bitwise equal results (no atomics anywhere). Bytes per
edge fall from ``4 d`` to ``d * bits / 8``; the table gives each time as a ratio to the
float32 Triton kernel and to ``torch.sparse.mm`` timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_kernels import bench, copy_bandwidth, env_info, power_law_graph  # noqa: E402

from qgnn.graph.graph import sparse_csr  # noqa: E402
from qgnn.kernels import aggregate as agg  # noqa: E402
from qgnn.kernels.lowbit import CodeGrid, pack_rows  # noqa: E402

GRIDS = {  # name: (bits, qmin, qmax, granularity)
    "int8 per-tensor": (8, -128, 127, "per_tensor"),
    "int4 per-tensor": (4, -8, 7, "per_tensor"),
    "int2 per-tensor": (2, -2, 1, "per_tensor"),
    "int4 per-row": (4, -8, 7, "per_row"),
    "int4 per-column": (4, -8, 7, "per_column"),
}


def on_grid(n, d, qmin, qmax, granularity, gen):
    """A quantizer-like output: random codes times positive steps, and its grid."""
    shape = {"per_tensor": (), "per_row": (n,), "per_column": (d,)}[granularity]
    scale = torch.rand(shape, generator=gen, device="cuda") * 0.1 + 0.01
    zero = torch.randint(qmin, qmax + 1, shape, generator=gen, device="cuda").float()
    codes = torch.randint(qmin, qmax + 1, (n, d), generator=gen, device="cuda").float()
    s, z = (scale[:, None], zero[:, None]) if granularity == "per_row" else (scale, zero)
    return ((codes - z) * s).contiguous(), CodeGrid(scale, zero, qmin, qmax, granularity)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--dims", default="64,128,256")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    results = {"env": env_info()}
    results["copy_GBps"] = copy_bandwidth() / 1e9
    graph = power_law_graph().gcn_norm(add_self_loops=True)
    n, e = graph.num_nodes, graph.num_edges
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    plan.transposed()
    adj = sparse_csr(graph.indptr, graph.indices, w, n)
    adj64 = sparse_csr(graph.indptr, graph.indices, w.double(), n)
    results["graph"] = {"N": n, "E": e, "max_in_degree": int(graph.in_degrees().max())}
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for d in [int(v) for v in args.dims.split(",")]:
        for name, (bits, qmin, qmax, gran) in GRIDS.items():
            if d != 256 and gran != "per_tensor":
                continue
            x, grid = on_grid(n, d, qmin, qmax, gran, gen)
            packed = pack_rows(x, grid)
            ref = torch.sparse.mm(adj64, x.double())
            out_packed = agg.aggregate_triton(plan, w, packed, "sum")[0]
            out_float = agg.aggregate_triton(plan, w, x, "sum")[0]
            repeats_equal = all(torch.equal(agg.aggregate_triton(plan, w, src, "sum")[0], ref_out)
                                for src, ref_out in ((x, out_float), (packed, out_packed)) for _ in range(3))
            err = ((out_packed.double() - ref).norm() / ref.norm()).item()
            xg = x.clone().requires_grad_(True)
            g = torch.randn(n, d, device="cuda")

            def fb(use_packed):
                def run():
                    p = pack_rows(xg.detach(), grid) if use_packed else None
                    out = agg.csr_aggregate(graph.indptr, graph.indices, w, xg, "sum", plan=plan, packed=p)
                    return torch.autograd.grad(out, [xg], g)
                return run

            t = {
                "spmm_fwd": bench(lambda: torch.sparse.mm(adj, x)),
                "triton_float_fwd": bench(lambda: agg.aggregate_triton(plan, w, x, "sum")),
                "triton_packed_fwd": bench(lambda: agg.aggregate_triton(plan, w, packed, "sum")),
                "pack": bench(lambda: pack_rows(x, grid)),
                "triton_float_fwdbwd": bench(fb(False)),
                "triton_packed_fwdbwd (with pack)": bench(fb(True)),
            }
            row = {"d": d, "grid": name, "bits": packed.bits, "rel_err_vs_float64": err,
                   "bitwise_equal_to_float_path": bool(torch.equal(out_packed, out_float)),
                   "repeats_bitwise_equal": repeats_equal,
                   "gathered_MB_float": e * d * 4 / 1e6, "gathered_MB_packed": e * packed.data.shape[1] / 1e6,
                   "times_ms": t}
            rows.append(row)
            results["rows"] = rows
            Path(args.out).write_text(json.dumps(results, indent=1))
            us = {k: (f"{v * 1e3:7.1f}" if isinstance(v, float) else "   fail") for k, v in t.items()}
            speed = lambda a, b: f"{t[a] / t[b]:.2f}x" if all(isinstance(t[k], float) for k in (a, b)) else "-"  # noqa: E731
            print(f"d={d:4d} {name:16s} err {err:.1e} repeatable={repeats_equal} | "
                  f"spmm {us['spmm_fwd']} us, float {us['triton_float_fwd']}, packed "
                  f"{us['triton_packed_fwd']} ({speed('triton_float_fwd', 'triton_packed_fwd')} float, "
                  f"{speed('spmm_fwd', 'triton_packed_fwd')} spmm), pack {us['pack']} | fwd+bwd float "
                  f"{us['triton_float_fwdbwd']}, packed {us['triton_packed_fwdbwd (with pack)']}", flush=True)
    results["wall_s"] = time.time() - t0
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
