"""Streamed LoRAP forward with the score product's bf16x3 split done by hand, against the
shipped streamed forward (N=169,343, d=256, k=40, r=2, tf32 off).

``tl.dot(..., input_precision="bf16x3")`` splits both float32 operands into bf16 high and
low parts inside the kernel, every column chunk of every program. On Hopper the second
operand of a tensor-core product is read from shared memory, so the split ``W_a^T`` tile
goes registers -> shared memory again before each product. Here ``W_a`` is split once on the
host into ``W_hi`` and ``W_lo = bf16(W_a - W_hi)`` (``2 k d`` bytes each), whose tiles the
pipeline copies straight to shared memory; the kernel splits only its ``z`` tile, once a
chunk, for the three products ``z_lo W_hi + z_hi W_lo + z_hi W_hi`` (small terms first).
The rest of the kernel is the shipped one (alpha U hoisted, rank <= 4).

    python benchmarks/experiments/lorap_presplit.py            # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1`` checks the variants on the CPU (errors only).
``VARIANTS='[[64, 64, 4, 4, 3, 160, 1], ...]'``: (BLOCK_M, BLOCK_C, warps, stages,
output-pass stages, maxnreg or 0, split score columns 1/0) to time.
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

sys.path.insert(0, os.path.dirname(__file__))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)


@triton.jit
def _presplit_scores(z_hi, z_lo, whi_ptr, wlo_ptr, cols, cmask, D_IN, K, acc,
                     K_OFF: tl.constexpr, K_W: tl.constexpr, EMULATE: tl.constexpr):
    """``acc += z[:, cols] W_a^T[cols, K_OFF:K_OFF + K_W]`` as three bf16 products.
    ``EMULATE``: the same products in float32 (Triton's CPU interpreter computes bf16 dots
    wrongly), for checking the kernel's indexing on the CPU."""
    kk = K_OFF + tl.arange(0, K_W)
    m = cmask[:, None] & (kk < K)[None, :]
    w_hi = tl.load(whi_ptr + kk[None, :] * D_IN + cols[:, None], mask=m, other=0.0)
    w_lo = tl.load(wlo_ptr + kk[None, :] * D_IN + cols[:, None], mask=m, other=0.0)
    if EMULATE:
        z_hi, z_lo = z_hi.to(tl.float32), z_lo.to(tl.float32)
        w_hi, w_lo = w_hi.to(tl.float32), w_lo.to(tl.float32)
    acc = tl.dot(z_lo, w_hi, acc)
    acc = tl.dot(z_hi, w_lo, acc)
    return tl.dot(z_hi, w_hi, acc)


@triton.jit
def lorap_fwd_presplit_kernel(
    s_ptr, z_ptr, whi_ptr, wlo_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr,
    N, D, D_IN, K,
    R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, K_A: tl.constexpr,
    K_B: tl.constexpr, STAGES: tl.constexpr, STAGES_OUT: tl.constexpr,
    STORE_ALPHA: tl.constexpr, EMULATE: tl.constexpr, ALIGN_D: tl.constexpr = 1, ALIGN_DIN: tl.constexpr = 1,
    ALIGN_K: tl.constexpr = 1,
):
    """The shipped ``lorap_fwd_stream_kernel`` (``HOIST_AU``) with the scores from host-split
    ``W_hi``, ``W_lo`` ``(K, D_IN)`` bfloat16."""
    D, D_IN, K = tk._aligned(D, ALIGN_D), tk._aligned(D_IN, ALIGN_DIN), tk._aligned(K, ALIGN_K)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cc = tl.arange(0, BLOCK_C)
    ka = tl.arange(0, K_A)
    sa = tl.zeros((BLOCK_M, K_A), dtype=tl.float32)
    if K_B > 0:
        kb = K_A + tl.arange(0, K_B)
        sb = tl.zeros((BLOCK_M, K_B), dtype=tl.float32)
    for c0 in tl.range(0, D_IN, BLOCK_C, num_stages=STAGES):
        cols = c0 + cc
        cmask = cols < D_IN
        zt = tl.load(z_ptr + rows64[:, None] * D_IN + cols[None, :],
                     mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        z_hi = zt.to(tl.bfloat16)
        z_lo = (zt - z_hi.to(tl.float32)).to(tl.bfloat16)
        sa = _presplit_scores(z_hi, z_lo, whi_ptr, wlo_ptr, cols, cmask, D_IN, K, sa, 0, K_A,
                              EMULATE)
        if K_B > 0:
            sb = _presplit_scores(z_hi, z_lo, whi_ptr, wlo_ptr, cols, cmask, D_IN, K, sb, K_A,
                                  K_B, EMULATE)
    sa = tk._biased(sa, ba_ptr, ka, K)
    row_max = tl.max(sa, axis=1)
    if K_B > 0:
        sb = tk._biased(sb, ba_ptr, kb, K)
        row_max = tl.maximum(row_max, tl.max(sb, axis=1))
    pa = tl.exp(sa - row_max[:, None])
    den = tl.sum(pa, axis=1)
    if K_B > 0:
        pb = tl.exp(sb - row_max[:, None])
        den += tl.sum(pb, axis=1)
        alpha_b = pb / den[:, None]
    alpha_a = pa / den[:, None]
    if K_B == 0:
        alpha_b = alpha_a
        kb = ka
    if STORE_ALPHA:
        tl.store(alpha_ptr + rows64[:, None] * K + ka[None, :], alpha_a,
                 mask=rmask[:, None] & (ka < K)[None, :])
        if K_B > 0:
            tl.store(alpha_ptr + rows64[:, None] * K + kb[None, :], alpha_b,
                     mask=rmask[:, None] & (kb < K)[None, :])
    au0 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 0, K_B)
    if R > 1:
        au1 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 1, K_B)
    if R > 2:
        au2 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 2, K_B)
    if R > 3:
        au3 = tk._alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 3, K_B)
    for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES_OUT):
        cols = c0 + cc
        cmask = cols < D
        m = rmask[:, None] & cmask[None, :]
        res = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=m, other=0.0).to(tl.float32)
        res += tk._rank_term(au0, v_ptr, 0, D, cols, cmask)
        if R > 1:
            res += tk._rank_term(au1, v_ptr, 1, D, cols, cmask)
        if R > 2:
            res += tk._rank_term(au2, v_ptr, 2, D, cols, cmask)
        if R > 3:
            res += tk._rank_term(au3, v_ptr, 3, D, cols, cmask)
        tl.store(out_ptr + rows64[:, None] * D + cols[None, :], res, mask=m)


def split_bf16(w):
    """``(w_hi, w_lo)`` bfloat16 with ``w_hi + w_lo`` within ``2^-16`` of ``w``, relatively."""
    hi = w.to(torch.bfloat16)
    return hi, (w - hi.float()).to(torch.bfloat16)


def presplit_forward(s, Wa, ba, U, V, out, alpha=None, block_m=64, block_c=64, warps=4,
                     stages=4, stages_out=3, maxnreg=160, split_k=1, w_parts=None):
    n, d = s.shape
    k, r = U.shape
    k_a, k_b = L._score_parts(k, bool(split_k))
    w_hi, w_lo = w_parts if w_parts is not None else split_bf16(Wa)
    extra = {"maxnreg": maxnreg} if maxnreg else {}
    return lorap_fwd_presplit_kernel[(-(-n // block_m),)](
        s, s, w_hi, w_lo, ba, U, V, out, alpha if alpha is not None else out, n, d, d, k,
        R=r, BLOCK_M=block_m, BLOCK_C=block_c, K_A=k_a, K_B=k_b, STAGES=stages,
        STAGES_OUT=stages_out, STORE_ALPHA=alpha is not None, EMULATE=not s.is_cuda,
        ALIGN_D=L._pow2_divisor(d), ALIGN_DIN=L._pow2_divisor(d), ALIGN_K=L._pow2_divisor(k),
        num_warps=warps, num_stages=stages, **extra)


DEV = os.environ.get("DEV", "cuda")
# (BLOCK_M, BLOCK_C, warps, stages, stages_out, maxnreg (0: none), split score columns)
VARIANTS = [
    (64, 64, 4, 4, 3, 160, 1), (64, 64, 4, 3, 3, 160, 1), (64, 64, 4, 4, 3, 0, 1),
    (64, 64, 4, 4, 3, 160, 0), (64, 64, 4, 3, 3, 128, 1), (64, 64, 4, 2, 2, 160, 1),
    (128, 64, 8, 4, 3, 0, 1), (128, 64, 8, 3, 3, 0, 1), (64, 32, 4, 4, 4, 160, 1),
    (64, 128, 4, 2, 2, 0, 1), (64, 64, 8, 4, 3, 0, 1),
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
    w_parts = split_bf16(Wa)

    def errors():
        e = {"out": float(((out.double() - ref).abs().max() / ref.abs().max())),
             "unwritten": int(torch.isnan(out).sum())}
        if alpha is not None:
            e["alpha"] = float((alpha.double() - ref_alpha).abs().max() / ref_alpha.abs().max())
            e["alpha_unwritten"] = int(torch.isnan(alpha).sum())
        return e

    def name(v):
        return "BLOCK_M={} BLOCK_C={} warps={} stages={} stages_out={} maxnreg={} split_k={}".format(*v)

    cases = {"shipped streamed forward": lambda: L.lorap_forward_triton(
        s, Wa, ba, U, V, out=out, alpha_out=alpha, mode="stream")}
    for v in VARIANTS:
        cases[name(v)] = (lambda v=v: presplit_forward(s, Wa, ba, U, V, out, alpha, *v, w_parts=w_parts))
    cases["first variant with the split on the host in the call"] = (
        lambda: presplit_forward(s, Wa, ba, U, V, out, alpha, *VARIANTS[0]))
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
            print(f"{key:75s} error {rows[key]['error'][:120]}", flush=True)
            continue
        rows[key] = {"errors": {} if key in ("s + 1 (copy floor)", "torch ops") else errors(),
                     "times_us": []}
        if DEV == "cuda" and hasattr(kern, "n_regs"):
            rows[key].update(registers=kern.n_regs, spills=kern.n_spills,
                             shared_bytes=kern.metadata.shared)
    live = [key for key in cases if "error" not in rows[key]]
    for _ in range(rounds):
        for key in live:
            rows[key]["times_us"].append(do_bench(cases[key], warmup=25, rep=200) * 1e3)
    for key in live:
        t = rows[key]["times_us"]
        rows[key]["us"] = statistics.median(t) if t else float("nan")
        extra = {x: rows[key][x] for x in ("registers", "spills", "shared_bytes") if x in rows[key]}
        print(f"{key:75s} {rows[key]['us']:8.1f} us  {rows[key]['errors']} {extra}", flush=True)
    res = {"n": n, "d": d, "k": k, "r": r, "rounds": rounds, "store_alpha": store_alpha,
           "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
           "torch": torch.__version__, "triton": triton.__version__, "rows": rows}
    path = os.path.join(os.environ.get("OUT", "/tmp"), os.environ.get("NAME", "lorap_presplit.json"))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
