"""Streamed LoRAP forward variants (score parts, output-pass pipelining, blocks) at N=169,343,
d=256, k=40, r=2, tf32 off: time and error against float64 on one GPU.

    python benchmarks/experiments/lorap_forward_variants.py   # writes $OUT or /tmp/fwd_variants.json

``DEV=cpu NROWS=100 TRITON_INTERPRET=1`` checks the kernels on the CPU (no timings).
"""
import contextlib, json, os, sys
sys.path.insert(0, ".")
import torch, triton, triton.language as tl
from triton.testing import do_bench
from qgnn.kernels import lorap as L
from qgnn.kernels._triton_kernels import _masked_softmax

torch.backends.cuda.matmul.allow_tf32 = False
dev = os.environ.get("DEV", "cuda")


@triton.jit
def fwd_v(s_ptr, wa_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr, N, K,
          D: tl.constexpr, R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
          K_PAD: tl.constexpr, PREC: tl.constexpr, STAGES: tl.constexpr, STAGES2: tl.constexpr,
          STORE_ALPHA: tl.constexpr, SPLITK: tl.constexpr, PASS2: tl.constexpr, PASS1: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cc = tl.arange(0, BLOCK_C)
    if SPLITK:  # k=40 as 32 + 16 columns instead of 64
        ka = tl.arange(0, 32)
        kb = 32 + tl.arange(0, 16)
        sa = tl.zeros((BLOCK_M, 32), dtype=tl.float32)
        sb = tl.zeros((BLOCK_M, 16), dtype=tl.float32)
        for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES):
            cols = c0 + cc
            zt = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=rmask[:, None], other=0.0)
            wta = tl.load(wa_ptr + ka[None, :] * D + cols[:, None])
            wtb = tl.load(wa_ptr + kb[None, :] * D + cols[:, None], mask=(kb < K)[None, :], other=0.0)
            sa = tl.dot(zt, wta, sa, input_precision=PREC)
            sb = tl.dot(zt, wtb, sb, input_precision=PREC)
        sa += tl.load(ba_ptr + ka)[None, :]
        sb += tl.load(ba_ptr + kb, mask=kb < K, other=0.0)[None, :]
        sb = tl.where((kb < K)[None, :], sb, float("-inf"))
        m = tl.maximum(tl.max(sa, axis=1), tl.max(sb, axis=1))
        pa = tl.exp(sa - m[:, None])
        pb = tl.exp(sb - m[:, None])
        den = tl.sum(pa, axis=1) + tl.sum(pb, axis=1)
        aa = pa / den[:, None]
        ab = pb / den[:, None]
        if STORE_ALPHA:
            tl.store(alpha_ptr + rows64[:, None] * K + ka[None, :], aa, mask=rmask[:, None])
            tl.store(alpha_ptr + rows64[:, None] * K + kb[None, :], ab, mask=rmask[:, None] & (kb < K)[None, :])
        au0 = tl.sum(aa * tl.load(u_ptr + ka * R)[None, :], axis=1) + tl.sum(ab * tl.load(u_ptr + kb * R, mask=kb < K, other=0.0)[None, :], axis=1)
        au1 = tl.sum(aa * tl.load(u_ptr + ka * R + 1)[None, :], axis=1) + tl.sum(ab * tl.load(u_ptr + kb * R + 1, mask=kb < K, other=0.0)[None, :], axis=1)
    else:
        kk = tl.arange(0, K_PAD)
        kmask = kk < K
        scores = tl.zeros((BLOCK_M, K_PAD), dtype=tl.float32)
        if PASS1:
            for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES):
                cols = c0 + cc
                zt = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=rmask[:, None], other=0.0)
                wt = tl.load(wa_ptr + kk[None, :] * D + cols[:, None], mask=kmask[None, :], other=0.0)
                scores = tl.dot(zt, wt, scores, input_precision=PREC)
        b = tl.load(ba_ptr + kk, mask=kmask, other=0.0)
        alpha = _masked_softmax(scores + b[None, :], kmask)
        if STORE_ALPHA:
            tl.store(alpha_ptr + rows64[:, None] * K + kk[None, :], alpha, mask=rmask[:, None] & kmask[None, :])
        au0 = tl.sum(alpha * tl.load(u_ptr + kk * R, mask=kmask, other=0.0)[None, :], axis=1)
        au1 = tl.sum(alpha * tl.load(u_ptr + kk * R + 1, mask=kmask, other=0.0)[None, :], axis=1)
    if PASS2:
        for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES2):
            cols = c0 + cc
            res = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=rmask[:, None], other=0.0)
            res += au0[:, None] * tl.load(v_ptr + cols)[None, :]
            res += au1[:, None] * tl.load(v_ptr + D + cols)[None, :]
            tl.store(out_ptr + rows64[:, None] * D + cols[None, :], res, mask=rmask[:, None])


@contextlib.contextmanager
def patched(module, patch):
    """Attributes of ``module`` (e.g. the tunables of ``qgnn.kernels.lorap``) set to ``patch``
    for the block."""
    saved = {a: getattr(module, a) for a in patch}
    for a, b in patch.items():
        setattr(module, a, b)
    try:
        yield
    finally:
        for a, b in saved.items():
            setattr(module, a, b)


def lorap_inputs(n, d, k, r, dev):
    """Seeded LoRAP inputs ``(s, W_a, b_a, U, V)`` on ``dev`` and the generator (for more draws)."""
    g = torch.Generator(device=dev).manual_seed(0)
    s = torch.randn(n, d, device=dev, generator=g)
    Wa = torch.randn(k, d, device=dev, generator=g) / 16
    ba = torch.randn(k, device=dev, generator=g) / 10
    U = torch.randn(k, r, device=dev, generator=g)
    V = torch.randn(r, d, device=dev, generator=g) / 4
    return g, (s, Wa, ba, U, V)


def main():
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), 256, 40, 2
    _, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, dev)
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s); alpha = torch.empty(n, k, device=dev)
    res = {}

    def err(o):
        return float((o.double() - ref).norm() / ref.norm())

    if dev == "cuda":
        t = do_bench(lambda: L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha), warmup=50, rep=400)
        res["library_stream_alpha"] = (t * 1e3, err(out))
        t = do_bench(lambda: s.add(1.0, ), warmup=50, rep=400)  # copy-like reference
        res["s_plus_1"] = (t * 1e3, 0.0)
    grid = lambda bm: (triton.cdiv(n, bm),)
    configs = []
    for bm, bc, w, st, st2 in [(64, 64, 4, 3, 1), (64, 64, 4, 3, 2), (64, 64, 4, 3, 3), (64, 64, 8, 3, 2),
                               (64, 32, 4, 4, 2), (128, 32, 8, 4, 2), (32, 64, 4, 3, 2), (64, 128, 8, 2, 1)]:
        for splitk in (0, 1):
            configs.append(dict(BLOCK_M=bm, BLOCK_C=bc, num_warps=w, STAGES=st, STAGES2=st2, SPLITK=splitk, PASS1=1, PASS2=1))
    configs.append(dict(BLOCK_M=64, BLOCK_C=64, num_warps=4, STAGES=3, STAGES2=1, SPLITK=0, PASS1=1, PASS2=0))
    configs.append(dict(BLOCK_M=64, BLOCK_C=64, num_warps=4, STAGES=3, STAGES2=1, SPLITK=0, PASS1=0, PASS2=1))
    configs.append(dict(BLOCK_M=64, BLOCK_C=64, num_warps=4, STAGES=3, STAGES2=2, SPLITK=0, PASS1=0, PASS2=1))
    for prec in ("tf32x3", "tf32"):
        for c in configs:
            if prec == "tf32" and not (c["PASS1"] and c["PASS2"]):
                continue
            name = f"{prec} " + " ".join(f"{k_}={v}" for k_, v in c.items())
            try:
                f = lambda: fwd_v[grid(c["BLOCK_M"])](s, Wa, ba, U, V, out, alpha, n, k, D=d, R=r,
                                                     K_PAD=64, PREC=prec, STORE_ALPHA=True, **c)
                out.zero_(); f(); dev == "cuda" and torch.cuda.synchronize()
                e = err(out) if c["PASS1"] and c["PASS2"] else float("nan")
                t = do_bench(f, warmup=50, rep=400) if dev == "cuda" else 0.0
                res[name] = (t * 1e3, e)
            except Exception as ex:  # noqa
                res[name] = (float("nan"), repr(ex)[:200])
            print(f"{name:90s} {res[name][0]:8.1f} us  err {res[name][1]}", flush=True)
    floor_bytes = n * d * 4 * 2 + n * k * 4
    print("floor_bytes", floor_bytes)
    for k_, (t, e) in res.items():
        print(f"{k_:90s} {t:8.1f} us  err {e}")
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "fwd_variants.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
