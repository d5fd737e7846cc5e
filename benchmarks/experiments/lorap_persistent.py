"""Streamed LoRAP forward as a persistent kernel with the two passes of neighbouring tiles in
one loop, against the shipped streamed forward (N=169,343, d=256, k=40, r=2, tf32 off).

The shipped forward runs one program a 64-row tile: pass 1 reads the tile from DRAM for the
scores, the softmax runs, pass 2 re-reads it (from L2) and writes the output. While a program
is in its softmax or pass 2 it has no DRAM read in flight. Here each program walks the tiles
``pid, pid + G, ...`` in one flat loop over (tile, column chunk): iteration ``i`` loads chunk
``c`` of the *next* tile for its scores and chunk ``c`` of the *current* tile for the output,
so the pipeliner keeps DRAM reads in flight through the output pass, and the softmax of the
next tile runs at the last chunk of the current one (as the epilogue of Triton's persistent
matmul does).

    python benchmarks/experiments/lorap_persistent.py            # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1`` checks the variants on the CPU (errors only).
Its scores take ``W_a`` as float32 (``W_SPLIT`` = 0); it was measured before the library's
forward took ``W_a`` as bf16 parts (JSON ``kernels_stream/experiments/lorap_persistent_h100*.json``).
``VARIANTS='[[64, 64, 4, 2, 2], ...]'``: (BLOCK_M, BLOCK_C, warps, stages, programs a
multiprocessor) to time.
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
from qgnn.kernels._common import dot_precision, num_sms  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)


@triton.jit
def lorap_fwd_persistent_kernel(
    s_ptr, z_ptr, wa_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr,
    N, D, D_IN, K, NUM_PROGS,
    R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, K_A: tl.constexpr,
    K_B: tl.constexpr, PREC: tl.constexpr, STAGES: tl.constexpr, STORE_ALPHA: tl.constexpr,
):
    """``out = s + (softmax(z W_a^T + b_a) U) V``; program ``pid`` takes the tiles
    ``pid, pid + NUM_PROGS, ...``. Iteration ``i`` of the flat loop handles column chunk
    ``c = i % NCHUNK`` of local tile ``t = i // NCHUNK - 1``: the output of tile ``t`` (none
    when ``t = -1``) and the scores of tile ``t + 1``. ``R <= 4``."""
    pid = tl.program_id(0)
    num_tiles = tl.cdiv(N, BLOCK_M)
    my_tiles = (num_tiles - pid + NUM_PROGS - 1) // NUM_PROGS
    nchunk = tl.cdiv(tl.maximum(D, D_IN), BLOCK_C)
    mm = tl.arange(0, BLOCK_M)
    cc = tl.arange(0, BLOCK_C)
    ka = tl.arange(0, K_A)
    kb = K_A + tl.arange(0, K_B if K_B > 0 else K_A)
    sa = tl.zeros((BLOCK_M, K_A), dtype=tl.float32)
    sb = tl.zeros((BLOCK_M, K_B if K_B > 0 else K_A), dtype=tl.float32)
    au0 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    au1 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    au2 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    au3 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for i in tl.range(0, (my_tiles + 1) * nchunk, num_stages=STAGES):
        t = i // nchunk - 1
        c = i % nchunk
        cols = c * BLOCK_C + cc
        cur = (pid + t * NUM_PROGS).to(tl.int64) * BLOCK_M + mm
        nxt = cur + NUM_PROGS * BLOCK_M
        # scores of the next tile
        zmask = cols < D_IN
        nmask = nxt < N
        zt = tl.load(z_ptr + nxt[:, None] * D_IN + cols[None, :],
                     mask=nmask[:, None] & zmask[None, :], other=0.0).to(tl.float32)
        sa = tk._chunk_scores(zt, zt, zt, wa_ptr, wa_ptr, cols, zmask, D_IN, K, sa, 0, K_A, PREC, 0)
        if K_B > 0:
            sb = tk._chunk_scores(zt, zt, zt, wa_ptr, wa_ptr, cols, zmask, D_IN, K, sb, K_A, K_B,
                                   PREC, 0)
        # output of the current tile
        omask = cols < D
        m = ((cur >= 0) & (cur < N))[:, None] & omask[None, :]  # t = -1: cur < 0
        res = tl.load(s_ptr + cur[:, None] * D + cols[None, :], mask=m, other=0.0).to(tl.float32)
        res += tk._rank_term(au0, v_ptr, 0, D, cols, omask)
        if R > 1:
            res += tk._rank_term(au1, v_ptr, 1, D, cols, omask)
        if R > 2:
            res += tk._rank_term(au2, v_ptr, 2, D, cols, omask)
        if R > 3:
            res += tk._rank_term(au3, v_ptr, 3, D, cols, omask)
        tl.store(out_ptr + cur[:, None] * D + cols[None, :], res, mask=m)
        if c == nchunk - 1:  # the next tile's scores are complete: its softmax and alpha U
            za = tk._biased(sa, ba_ptr, ka, K)
            row_max = tl.max(za, axis=1)
            if K_B > 0:
                zb = tk._biased(sb, ba_ptr, kb, K)
                row_max = tl.maximum(row_max, tl.max(zb, axis=1))
            pa = tl.exp(za - row_max[:, None])
            den = tl.sum(pa, axis=1)
            if K_B > 0:
                pb = tl.exp(zb - row_max[:, None])
                den += tl.sum(pb, axis=1)
                alpha_b = pb / den[:, None]
            else:
                alpha_b = pa * 0.0
            alpha_a = pa / den[:, None]
            if STORE_ALPHA:
                tl.store(alpha_ptr + nxt[:, None] * K + ka[None, :], alpha_a,
                         mask=nmask[:, None] & (ka < K)[None, :])
                if K_B > 0:
                    tl.store(alpha_ptr + nxt[:, None] * K + kb[None, :], alpha_b,
                             mask=nmask[:, None] & (kb < K)[None, :])
            au0 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 0, K_B)
            if R > 1:
                au1 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 1, K_B)
            if R > 2:
                au2 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 2, K_B)
            if R > 3:
                au3 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 3, K_B)
            sa = tl.zeros((BLOCK_M, K_A), dtype=tl.float32)
            sb = tl.zeros((BLOCK_M, K_B if K_B > 0 else K_A), dtype=tl.float32)


def persistent_forward(s, Wa, ba, U, V, out, alpha=None, block_m=64, block_c=64, warps=4,
                       stages=2, per_sm=2, maxnreg=None):
    n, d = s.shape
    k, r = U.shape
    k_a, k_b = L._score_parts(k, True)
    progs = max(1, min(-(-n // block_m), per_sm * num_sms(s.device)))
    extra = {"maxnreg": maxnreg} if maxnreg else {}
    return lorap_fwd_persistent_kernel[(progs,)](
        s, s, Wa, ba, U, V, out, alpha if alpha is not None else out, n, d, d, k, progs,
        R=r, BLOCK_M=block_m, BLOCK_C=block_c, K_A=k_a, K_B=k_b, PREC=dot_precision(),
        STAGES=stages, STORE_ALPHA=alpha is not None, num_warps=warps, num_stages=stages, **extra)


DEV = os.environ.get("DEV", "cuda")
# (BLOCK_M, BLOCK_C, warps, stages, programs a multiprocessor[, maxnreg])
VARIANTS = [
    (64, 64, 4, 2, 2), (64, 64, 4, 3, 1), (64, 64, 4, 3, 2), (64, 64, 4, 4, 1),
    (64, 64, 8, 2, 2), (64, 64, 8, 3, 1), (64, 32, 4, 3, 2), (64, 32, 4, 4, 2),
    (64, 32, 4, 6, 1), (32, 64, 4, 2, 3), (32, 64, 4, 3, 2), (128, 64, 8, 2, 1),
    (64, 64, 4, 2, 2, 160), (64, 32, 4, 4, 2, 160),
]
if os.environ.get("VARIANTS"):
    VARIANTS = [tuple(v) for v in json.loads(os.environ["VARIANTS"])]


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), int(os.environ.get("D", 256)), 40, 2
    rounds = int(os.environ.get("ROUNDS", 5))
    store_alpha = os.environ.get("ALPHA", "0") != "0"
    _, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, DEV)
    ref_alpha = torch.softmax(s.double() @ Wa.double().T + ba.double(), dim=1)
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s)
    alpha = torch.empty(n, k, device=DEV) if store_alpha else None

    def errors():
        e = {"out": float(((out.double() - ref).abs().max() / ref.abs().max())),
             "unwritten": int(torch.isnan(out).sum())}
        if alpha is not None:
            e["alpha"] = float((alpha.double() - ref_alpha).abs().max() / ref_alpha.abs().max())
            e["alpha_unwritten"] = int(torch.isnan(alpha).sum())
        return e

    def name(v):
        return "BLOCK_M={} BLOCK_C={} warps={} stages={} per_sm={}".format(*v[:5]) + (
            f" maxnreg={v[5]}" if len(v) > 5 else "")

    def shipped():
        return L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha, mode="stream")

    cases = {"shipped streamed forward": shipped}
    for v in VARIANTS:
        cases[name(v)] = (lambda v=v: persistent_forward(s, Wa, ba, U, V, out, alpha, *v))
    if DEV == "cuda":
        cases["s + 1 (copy floor)"] = lambda: torch.add(s, 1.0, out=out)
        cases["torch ops"] = lambda: L.lorap_reference(s, Wa, ba, U, V)
    rows = {}
    for key, fn in cases.items():
        out.fill_(float("nan"))
        if alpha is not None:
            alpha.fill_(float("nan"))
        try:
            kern = fn()
        except Exception as exc:  # a variant the compiler refuses
            rows[key] = {"error": repr(exc)[:300]}
            print(f"{key:60s} error {rows[key]['error'][:120]}", flush=True)
            continue
        rows[key] = {"errors": {} if key in ("s + 1 (copy floor)", "torch ops") else errors(), "times_us": []}
        if DEV == "cuda" and hasattr(kern, "n_regs"):
            rows[key].update(registers=kern.n_regs, spills=kern.n_spills,
                             shared_bytes=kern.metadata.shared)
        print(f"{key:60s} {rows[key]}", flush=True)
    live = [key for key in cases if "error" not in rows[key]]
    for _ in range(rounds):
        for key in live:
            rows[key]["times_us"].append(do_bench(cases[key], warmup=25, rep=200) * 1e3)
    for key in live:
        t = rows[key]["times_us"]
        rows[key]["us"] = statistics.median(t) if t else float("nan")
        print(f"{key:60s} {rows[key]['us']:8.1f} us  {rows[key]['errors']}", flush=True)
    res = {"n": n, "d": d, "k": k, "r": r, "rounds": rounds, "store_alpha": store_alpha,
           "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
           "torch": torch.__version__, "triton": triton.__version__, "rows": rows}
    path = os.path.join(os.environ.get("OUT", "/tmp"), os.environ.get("NAME", "lorap_persistent.json"))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
