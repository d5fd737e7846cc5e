"""Kernel time of each pass LoRAP adds to (or takes from) a W4A4 GCN training epoch, at the
epoch's own shapes, against the no-prompt passes they replace and against copy speed.

Shapes: N=169,343 rows, LoRAP on d=256 (the two hidden layers) and d=40 (the last), k=40,
r=2, tf32 off; the aggregate rounded on a 4-bit affine grid (vanilla QAT's ``FakeQuantize``
in training mode) and the layer's bias inside, as ``QGCNConv`` calls them. Each call runs
REPS times under torch.profiler after warm-up; the table gives GPU time per call of every
kernel it launched, by name (host gaps left out), and the bytes each pass must move at the
least, over the measured copy bandwidth. The aggregation rows time the CSR kernel on a
power-law graph of ogbn-arxiv's size at widths 256 and 40 (the backward of a symmetric
aggregation is the same kernel).

    python benchmarks/experiments/lorap_pass_costs.py        # JSON to $OUT or /tmp

``WIDTHS=256`` picks the LoRAP widths, ``AGG=0`` leaves out the aggregation.
``DEV=cpu NROWS=300 REPS=1 TRITON_INTERPRET=1`` runs it on the CPU (no timings).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [".", HERE, os.path.join(HERE, "..")]  # qgnn, the census, bench_kernels
import torch  # noqa: E402

from epoch_kernel_census import cuda_kernels  # noqa: E402
from qgnn.kernels import aggregate as agg  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402
from qgnn.quant.qat import activation_quantizer  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
N = int(os.environ.get("NROWS", 169_343))
REPS = int(os.environ.get("REPS", 20))
K, R, F32 = 40, 2, 4
WIDTHS = [int(w) for w in os.environ.get("WIDTHS", "256,40").split(",")]
AGG = os.environ.get("AGG", "1") == "1"  # AGG=0 leaves out the aggregation rows


def kernel_us(fn, reps=REPS):
    """GPU time per call of each kernel ``fn`` launches: {name: us}, and their total."""
    per = {name: us / reps for name, (us, _) in cuda_kernels(fn, reps, dev=DEV, width=60).items()}
    return {"total": round(sum(per.values()), 1),
            "kernels": {k: round(v, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}}


def copy_gbps():
    x = torch.randn(256 * 2**20, device=DEV)  # 1 GiB
    y = torch.empty_like(x)
    t = kernel_us(lambda: y.copy_(x), reps=10)["total"]
    return 2 * x.numel() * F32 / (t * 1e-6) / 1e9 if t else float("nan")


def layer_inputs(d, k=K, r=R, seed=None):
    """What a W4A4 GCN layer hands LoRAP: the aggregate ``s`` and incoming gradient ``(N, d)``,
    the head's ``W_a, b_a, U, V``, the layer's bias, and its aggregate quantizer (vanilla
    QAT, 4-bit affine) in training mode with a range from ``s``."""
    g = torch.Generator(device=DEV).manual_seed(d if seed is None else seed)
    s = torch.randn(N, d, device=DEV, generator=g)
    grad = torch.randn(N, d, device=DEV, generator=g)
    w_a = torch.randn(k, d, device=DEV, generator=g) / d ** 0.5
    b_a = torch.randn(k, device=DEV, generator=g) * 0.1
    u = torch.randn(k, r, device=DEV, generator=g) / k ** 0.5
    v = torch.randn(r, d, device=DEV, generator=g) * 0.1
    bias = torch.randn(d, device=DEV, generator=g) * 0.1
    q = activation_quantizer(4, 0.01).to(DEV).train()
    q(s)  # a range to start from, as after the first step
    return s, grad, w_a, b_a, u, v, bias, q


def layer_passes(d, gbps):
    s, grad, w_a, b_a, u, v, bias, q = layer_inputs(d)
    alpha = torch.empty(N, K, device=DEV)
    grid = q.grid_for_consumer(s)
    mb = N * d * F32 / 1e6  # one (N, d) float32 pass, MB
    mk = N * K * F32 / 1e6

    def lorap_fwd():
        gr = q.grid_for_consumer(s)  # observes s (min/max pass), as the layer does
        elements = N * d
        parts = L.split_bf16(w_a) if L.w_split_mode(elements) else None
        L.lorap_forward_triton(s, w_a, b_a, u, v, alpha_out=alpha, w_parts=parts,
                               input_grid=gr, bias=bias)

    def bwd(fuse):
        return lambda: L.lorap_backward_triton(grad, s, w_a, b_a, u, v, alpha=alpha,
                                               input_grid=grid, bias_grad=True, fuse_dz=fuse)

    rows = {
        "no prompt, forward: Q_aggregate.forward_add (observe + round + bias)":
            (lambda: q.forward_add(s, bias), 2 * mb),
        "no prompt, backward: bias gradient (column sums of g)":
            (lambda: grad.sum(0), mb),
        "LoRAP forward (observe + head with rounding, bias, alpha out)":
            (lorap_fwd, 2 * mb + mk),
        "LoRAP backward, shipped (row pass forms ds = g + dsc W_a)":
            (bwd(None), 2 * mb + 2 * mk + mb),
        "LoRAP backward, row pass without ds (cuBLAS addmm forms it)":
            (bwd(False), 2 * mb + 2 * mk + mb),
        "reference: g.clone() (read + write)": (lambda: grad.clone(), 2 * mb),
    }
    out = {}
    for name, (fn, floor_mb) in rows.items():
        res = kernel_us(fn)
        res["floor_us"] = round(floor_mb / gbps * 1e3, 1) if gbps == gbps else None
        out[name] = res
        print(f"d={d:4d} {res['total']:8.1f} us (floor {res['floor_us']}) {name}")
        for kname, us in res["kernels"].items():
            print(f"           {us:8.1f}  {kname}")
    return out


def aggregation(gbps):
    from bench_kernels import power_law_graph

    base = power_law_graph(n=N, m=int(1_166_243 * N / 169_343))
    graph = base.gcn_norm(add_self_loops=True)
    w = graph.edge_weight.float().contiguous()
    plan = agg.CSRPlan(graph.indptr, graph.indices)
    out = {}
    for d in (256, 40):
        x = torch.randn(N, d, device=DEV)
        res = kernel_us(lambda: agg.aggregate_triton(plan, w, x, "sum"))
        out[f"CSR aggregation, width {d}"] = res
        print(f"agg d={d:4d} {res['total']:8.1f} us")
    return out


def main():
    if DEV == "cuda":
        gbps = copy_gbps()
        print(f"copy bandwidth {gbps:.0f} GB/s")
    else:
        gbps = float("nan")
    res = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "n": N,
           "k": K, "r": R, "copy_GBps": gbps, "tf32": False}
    for d in WIDTHS:
        res[f"d={d}"] = layer_passes(d, gbps)
    if DEV == "cuda" and AGG:
        res["aggregation"] = aggregation(gbps)
    path = os.path.join(os.environ.get("OUT", "/tmp"), "lorap_pass_costs.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
