"""Where the LoRAP backward's time goes, at N=169,343, d=256, k=40, r=2, tf32 off, on one GPU,
and a split-K Triton kernel for ``dW_a = d_scores^T z`` (bf16x3 tensor-core products) against
the cuBLAS float32 GEMM the backward uses now.

Parts of ``lorap_backward_triton`` (stream mode), each timed alone with ``do_bench``:
the row pass (``lorap_bwd_stream_kernel``), ``dW_a`` through ``torch.mm`` (before) and
``lorap_dwa`` (now), the partial sums as three reductions (before) and one (now), and the whole
backward; with ``s + 1`` (a read and a write of ``s``) for scale. Each split-K
variant ``(BLOCK_M, BLOCK_C, SPLITS, warps, stages)`` gets its time and its relative error
against float64.

    python benchmarks/experiments/lorap_backward_parts.py     # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1`` checks the kernels on the CPU (errors only);
``D`` sets the width (default 256).
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import _triton_kernels as tk  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402
from qgnn.kernels._common import dot_precision  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
# (BLOCK_M, BLOCK_C, SPLITS, warps, stages)
VARIANTS = [(64, 64, 132, 4, 3), (64, 64, 264, 4, 3), (128, 64, 132, 4, 3), (128, 64, 132, 8, 3),
            (64, 128, 132, 4, 3), (64, 128, 264, 8, 3), (128, 128, 66, 8, 3), (64, 64, 528, 4, 4),
            (32, 64, 264, 2, 4), (128, 32, 132, 4, 4)]
if os.environ.get("VARIANTS"):
    VARIANTS = [tuple(v) for v in json.loads(os.environ["VARIANTS"])]


@triton.jit
def dwa_splitk_kernel(dsc_ptr, z_ptr, part_ptr, N, D, K, ROWS_PER_SPLIT,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, K_PAD: tl.constexpr,
                      PREC: tl.constexpr, STAGES: tl.constexpr):
    """``part[split, :, cols] = d_scores[rows]^T z[rows, cols]`` over this split's rows."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(1)
    cmask = cols < D
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    rr = tl.arange(0, BLOCK_M)
    acc = tl.zeros((K_PAD, BLOCK_C), dtype=tl.float32)
    start = split * ROWS_PER_SPLIT
    stop = tl.minimum(start + ROWS_PER_SPLIT, N)
    for r0 in tl.range(start, stop, BLOCK_M, num_stages=STAGES):
        rows = r0 + rr
        rmask = rows < stop
        rows64 = rows.to(tl.int64)
        dsc_t = tl.load(dsc_ptr + rows64[None, :] * K + kk[:, None],
                        mask=kmask[:, None] & rmask[None, :], other=0.0)
        zt = tl.load(z_ptr + rows64[:, None] * D + cols[None, :],
                     mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(dsc_t, zt, acc, input_precision=PREC)
    tl.store(part_ptr + (split * K + kk[:, None]).to(tl.int64) * D + cols[None, :], acc,
             mask=kmask[:, None] & cmask[None, :])


def dwa_splitk(dsc, z, variant, part=None):
    bm, bc, splits, warps, stages = variant
    n, k = dsc.shape
    d = z.shape[1]
    rows_per_split = -(-n // splits)
    rows_per_split = -(-rows_per_split // bm) * bm
    splits = -(-n // rows_per_split)
    if part is None or part.shape[0] != splits:
        part = torch.empty(splits, k, d, device=z.device, dtype=torch.float32)
    dwa_splitk_kernel[(-(-d // bc), splits)](
        dsc, z, part, n, d, k, rows_per_split, BLOCK_M=bm, BLOCK_C=bc,
        K_PAD=max(16, triton.next_power_of_2(k)), PREC=dot_precision(), STAGES=stages,
        num_warps=warps, num_stages=stages)
    return part.sum(0), part


def main():
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), int(os.environ.get("D", 256)), 40, 2
    rounds = int(os.environ.get("ROUNDS", 3))
    g, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, DEV)
    gout = torch.randn(n, d, device=DEV, generator=g)
    alpha = L.lorap_alpha(s, Wa, ba)
    full = L.lorap_backward_triton(gout, s, Wa, ba, U, V, alpha=alpha)
    # float64 d_scores and dW_a
    a64 = alpha.double()
    d_alpha = (gout.double() @ V.double().t()) @ U.double().t()
    dsc64 = a64 * (d_alpha - (a64 * d_alpha).sum(1, keepdim=True))
    dwa64 = dsc64.t() @ s.double()
    dsc = dsc64.float().contiguous()

    def rel(x, ref):
        return float((x.double() - ref).norm() / ref.norm())

    res = {"n": n, "rounds": rounds, "parts_us": {}, "splitk": {},
           "torch_mm_dwa_err": rel(torch.mm(dsc.t(), s), dwa64),
           "backward_dwa_err": rel(full[2], dwa64)}
    # the row pass alone, with the buffers lorap_backward_triton gives it
    bm, bc = L.BWD_STREAM_BLOCK_M, L.BWD_STREAM_BLOCK_C
    progs = -(-n // bm)
    width = k + k * r + r * d
    dsc_buf, dzs_buf = torch.empty(n, k, device=DEV), torch.empty(n, d, device=DEV)
    row_part = torch.zeros(progs, width, device=DEV)
    # the earlier layout: three partial buffers, three reductions
    old_parts = (torch.zeros(progs, k, device=DEV), torch.zeros(progs, k, r, device=DEV),
                 torch.zeros(progs, r, d, device=DEV))

    def row_pass():
        tk.lorap_bwd_stream_kernel[(progs,)](
            gout, alpha, Wa, U, V, dsc_buf, dzs_buf, row_part, n, d, d, k, width, Wa, R=r,
            R_PAD=max(2, L._next_pow2(r)), BLOCK_M=bm, BLOCK_C=bc, K_PAD=max(16, L._next_pow2(k)),
            PREC=dot_precision(), FUSE_DZ=True, ADD_G=True, num_warps=L.BWD_STREAM_WARPS,
            num_stages=1)

    parts = {
        "whole backward": lambda: L.lorap_backward_triton(gout, s, Wa, ba, U, V, alpha=alpha),
        "row pass (stream kernel)": row_pass,
        "dW_a: torch.mm(dsc^T, s)": lambda: torch.mm(dsc.t(), s),
        "dW_a: lorap_dwa (split-K)": lambda: L.lorap_dwa(dsc, s),
        "partial sums: three reductions": lambda: [p.sum(0) for p in old_parts],
        "partial sums: one reduction": lambda: row_part.sum(0),
        "s + 1": lambda: s.add(1.0),
    }
    res["library_dwa_err"] = rel(L.lorap_dwa(dsc, s), dwa64)
    for name, v in [(f"splitk {v}", v) for v in VARIANTS]:
        try:
            got, sk_part = dwa_splitk(dsc, s, v)
        except Exception as exc:  # a variant the compiler refuses
            res["splitk"][name] = {"error": repr(exc)[:300]}
            continue
        res["splitk"][name] = {"rel_err": rel(got, dwa64), "times_us": []}
        parts[name] = (lambda v=v, sk_part=sk_part: dwa_splitk(dsc, s, v, sk_part))
    times = {name: [] for name in parts}
    if DEV == "cuda":
        for _ in range(rounds):
            for name, fn in parts.items():
                times[name].append(do_bench(fn, warmup=25, rep=200) * 1e3)
    for name, ts in times.items():
        t = statistics.median(ts) if ts else float("nan")
        if name.startswith("splitk"):
            res["splitk"][name]["times_us"] = ts
            res["splitk"][name]["us"] = t
            extra = f"err {res['splitk'][name]['rel_err']:.2e}"
        else:
            res["parts_us"][name] = t
            extra = ""
        print(f"{name:45s} {t:8.1f} us  {extra}", flush=True)
    print(f"dW_a error against float64: torch.mm {res['torch_mm_dwa_err']:.2e}, "
          f"lorap_dwa {res['library_dwa_err']:.2e}, backward {res['backward_dwa_err']:.2e}")
    for name, row in res["splitk"].items():
        if "error" in row:
            print(f"{name}: {row['error']}")
    if DEV == "cuda":
        res["device"] = torch.cuda.get_device_name()
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "lorap_backward_parts.json"), "w"),
              indent=1)


if __name__ == "__main__":
    main()
