"""Aggregation + LoRAP with the scores gathered alongside the features, on one GPU.

For a linear aggregate ``s = A x`` the LoRAP scores are linear too:
``s W_a^T = A (x W_a^T)``. So ``z = x W_a^T`` (N x k, one GEMM) can be aggregated in the
same gather loop as ``x`` (k more floats per edge), and the epilogue only needs the softmax
over k and the rank-r product: no ``W_a`` tile on chip, which is what made the in-kernel
epilogue slow. This holds only where nothing quantizes the aggregate between the sum and the
head (float32, or A2Q, which leaves aggregates in full precision). Power-law graph of
ogbn-arxiv size (as ``bench_kernels.py``), d=256, k=40, r=2, tf32 off; time against the
shipped aggregation alone, the shipped aggregation followed by the streamed LoRAP kernel (the
default path) and the shipped in-kernel epilogue; error against float64.

    python benchmarks/experiments/agg_gathered_scores.py   # writes $OUT or /tmp/agg_gathered_scores.json

``DEV=cpu TRITON_INTERPRET=1`` checks the kernel on a small graph on the CPU (no timings).
"""
import json, os, sys
sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
import torch, triton, triton.language as tl
from qgnn.graph import Graph
from qgnn.kernels import aggregate as agg
from qgnn.kernels import lorap as L

torch.backends.cuda.matmul.allow_tf32 = False
dev = os.environ.get("DEV", "cuda")


@triton.jit
def agg_z_kernel(x_ptr, z_ptr, indices_ptr, weight_ptr, vstart_ptr, vlen_ptr, vout_ptr,
                 out_ptr, part_ptr, zpart_ptr, ba_ptr, u_ptr, v_ptr, NV, D, K,
                 R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                 K_PAD: tl.constexpr, UNROLL: tl.constexpr, LORAP: tl.constexpr):
    seg = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    smask = seg < NV
    start = tl.load(vstart_ptr + seg, mask=smask, other=0)
    length = tl.load(vlen_ptr + seg, mask=smask, other=0)
    dest = tl.load(vout_ptr + seg, mask=smask, other=0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    sacc = tl.zeros((BLOCK_M, K_PAD), dtype=tl.float32)
    steps = tl.max(length, axis=0)
    for e0 in range(0, steps, UNROLL):
        for u in tl.static_range(UNROLL):
            live = (e0 + u) < length
            edge = start + e0 + u
            src = tl.load(indices_ptr + edge, mask=live, other=0).to(tl.int64)
            w = tl.load(weight_ptr + edge, mask=live, other=0.0)
            xr = tl.load(x_ptr + src[:, None] * D + cols[None, :],
                         mask=live[:, None] & cmask[None, :], other=0.0)
            acc += xr * w[:, None]
            if LORAP:
                zr = tl.load(z_ptr + src[:, None] * K + kk[None, :],
                             mask=live[:, None] & kmask[None, :], other=0.0)
                sacc += zr * w[:, None]
    whole = smask & (dest >= 0)
    row = tl.where(whole, dest, 0).to(tl.int64)
    res = acc
    if LORAP:
        b = tl.load(ba_ptr + kk, mask=kmask, other=0.0)
        sc = tl.where(kmask[None, :], sacc + b[None, :], float("-inf"))
        p = tl.exp(sc - tl.max(sc, 1)[:, None])
        p = p / tl.sum(p, 1)[:, None]
        for j in tl.static_range(R):
            uj = tl.load(u_ptr + kk * R + j, mask=kmask, other=0.0)
            aj = tl.sum(p * uj[None, :], 1)
            vj = tl.load(v_ptr + j * D + cols, mask=cmask, other=0.0)
            res += aj[:, None] * vj[None, :]
    tl.store(out_ptr + row[:, None] * D + cols[None, :], res, mask=whole[:, None] & cmask[None, :])
    piece = smask & (dest < 0)
    slot = tl.where(piece, -dest - 1, 0).to(tl.int64)
    tl.store(part_ptr + slot[:, None] * D + cols[None, :], acc, mask=piece[:, None] & cmask[None, :])
    if LORAP:
        tl.store(zpart_ptr + slot[:, None] * K + kk[None, :], sacc, mask=piece[:, None] & kmask[None, :])


def agg_gathered(plan, w, x, params, z=None, block_m=16, warps=8, unroll=2, lorap=True):
    """Sum aggregation + LoRAP with gathered scores; ``z`` = ``x W_a^T`` (computed if None)."""
    wa, ba, U, V = params
    n, d = x.shape
    k, r = U.shape
    if lorap and z is None:
        z = x @ wa.T
    out = torch.empty_like(x)
    part = torch.empty((max(plan.num_pieces, 1), d), device=x.device)
    zpart = torch.empty((max(plan.num_pieces, 1), k), device=x.device)
    agg_z_kernel[(triton.cdiv(plan.num_segments, block_m),)](
        x, z if lorap else x, plan.indices, w, plan.vstart, plan.vlen, plan.vout,
        out, part, zpart, ba, U, V, plan.num_segments, d, k,
        R=r, BLOCK_M=block_m, BLOCK_D=triton.next_power_of_2(d), K_PAD=max(16, triton.next_power_of_2(k)),
        UNROLL=unroll, LORAP=lorap, num_warps=warps)
    if plan.num_pieces:  # long rows: sum the pieces, finish them with the same maths in torch
        rows = plan.heavy_rows
        hs = torch.zeros((rows.numel(), d), device=x.device).index_add_(0, plan.piece_heavy, part[: plan.num_pieces])
        if lorap:
            zs = torch.zeros((rows.numel(), k), device=x.device).index_add_(0, plan.piece_heavy, zpart[: plan.num_pieces])
            hs = hs + (torch.softmax(zs + ba, 1) @ U) @ V
        out[rows] = hs
    return out


def small_graph(n=300, m=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (m,), generator=g) ** 2 % n  # skewed in-degrees
    dst = torch.randint(0, n, (m,), generator=g)
    return Graph.from_edges(torch.cat([src, dst]), torch.cat([dst, src]), n)


def main():
    res = {}
    if dev == "cpu":
        graph = small_graph().gcn_norm(add_self_loops=True)
        plan = agg.CSRPlan(graph.indptr, graph.indices, max_segment=16)  # force pieces
        params = [torch.randn(40, 24) / 5, torch.randn(40) * 0.1, torch.randn(40, 2) / 6, torch.randn(2, 24) * 0.1]
        x = torch.randn(graph.num_nodes, 24)
    else:
        import bench_kernels as B
        graph = B.power_law_graph().gcn_norm(add_self_loops=True)
        plan = agg.CSRPlan(graph.indptr, graph.indices)
        params = B.lorap_params(256, 40, 2)
        x = torch.randn(graph.num_nodes, 256, device=dev)
    w = graph.edge_weight.float().contiguous()
    ref_s = agg.csr_aggregate_reference(graph.indptr, graph.indices, w.double(), x.double(), "sum")
    ref = L.lorap_reference(ref_s, *[p.double() for p in params])
    rel = lambda a, b: float((a.double() - b).norm() / b.norm())
    out = agg_gathered(plan, w, x, params)
    res["rel_err_out"] = rel(out, ref)
    res["rel_err_agg_only"] = rel(agg_gathered(plan, w, x, params, lorap=False), ref_s)
    res["pieces"] = plan.num_pieces
    print(res, flush=True)
    if dev != "cpu":
        from triton.testing import do_bench
        t = lambda f: do_bench(f, warmup=50, rep=400, return_mode="median") * 1e3  # noqa: E731
        z = x @ params[0].T
        res["us"] = {
            "shipped agg alone": t(lambda: agg.aggregate_triton(plan, w, x, "sum")),
            "shipped agg, then streamed LoRAP (default path)": t(
                lambda: L.lorap_forward_triton(agg.aggregate_triton(plan, w, x, "sum")[0], *params)),
            "shipped agg with in-kernel LoRAP epilogue": t(lambda: agg.aggregate_triton(plan, w, x, "sum", params)),
            "gathered-scores kernel, no LoRAP": t(lambda: agg_gathered(plan, w, x, params, lorap=False)),
            "z = x W_a^T (cuBLAS, tf32 off)": t(lambda: x @ params[0].T),
            "gathered-scores agg + LoRAP, z given": t(lambda: agg_gathered(plan, w, x, params, z=z)),
            "gathered-scores agg + LoRAP, with z GEMM": t(lambda: agg_gathered(plan, w, x, params)),
        }
        for bm, nw, un in ((16, 4, 2), (32, 8, 2), (16, 8, 4), (8, 4, 2)):
            res["us"][f"gathered, z given, block {bm} warps {nw} unroll {un}"] = t(
                lambda: agg_gathered(plan, w, x, params, z=z, block_m=bm, warps=nw, unroll=un))
        base = res["us"]["shipped agg alone"]
        res["ratio_to_agg_alone"] = {kk: v / base for kk, v in res["us"].items()}
        for kk, v in res["us"].items():
            print(f"{kk:55s} {v:8.1f} us  {v / base:5.2f}x", flush=True)
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "agg_gathered_scores.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
