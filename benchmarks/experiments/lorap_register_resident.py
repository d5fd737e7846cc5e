"""A single-pass LoRAP forward holding each block's whole 256-wide row tile in registers, timed
against the streamed forward on one GPU (it lost: spills).

    python benchmarks/experiments/lorap_register_resident.py   # writes $OUT or /tmp/reg_variants.json
"""
import json, os, sys
sys.path.insert(0, ".")
import torch, triton, triton.language as tl
from triton.testing import do_bench
from qgnn.kernels import lorap as L

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import lorap_inputs  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
dev = os.environ.get("DEV", "cuda")


@triton.jit
def fwd_reg(s_ptr, wa_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr, N, K,
            D: tl.constexpr, R: tl.constexpr, BLOCK_M: tl.constexpr, PREC: tl.constexpr,
            STORE_ALPHA: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, D)
    z = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=rmask[:, None], other=0.0)
    ka = tl.arange(0, 32)
    kb = 32 + tl.arange(0, 16)
    wta = tl.load(wa_ptr + ka[None, :] * D + cols[:, None])
    wtb = tl.load(wa_ptr + kb[None, :] * D + cols[:, None], mask=(kb < K)[None, :], other=0.0)
    sa = tl.dot(z, wta, input_precision=PREC) + tl.load(ba_ptr + ka)[None, :]
    sb = tl.dot(z, wtb, input_precision=PREC) + tl.load(ba_ptr + kb, mask=kb < K, other=0.0)[None, :]
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
    res = z + au0[:, None] * tl.load(v_ptr + cols)[None, :] + au1[:, None] * tl.load(v_ptr + D + cols)[None, :]
    tl.store(out_ptr + rows64[:, None] * D + cols[None, :], res, mask=rmask[:, None])


def main():
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), 256, 40, 2
    _, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, dev)
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s); alpha = torch.empty(n, k, device=dev)
    err = lambda o: float((o.double() - ref).norm() / ref.norm())
    res = {}
    if dev == "cuda":
        for alpha_on in (True, False):
            f = lambda: L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha if alpha_on else None)
            res[f"library alpha={alpha_on}"] = (do_bench(f, warmup=50, rep=400) * 1e3, err(out))
        res["s_plus_1"] = (do_bench(lambda: s.add(1.0), warmup=50, rep=400) * 1e3, 0)
    for prec in ("bf16x3", "tf32x3") if dev == "cuda" else ("tf32x3",):
        for bm, w in ((16, 4), (32, 4), (32, 8), (64, 8), (64, 16), (16, 2), (128, 16)):
            for alpha_on in (True, False):
                name = f"reg {prec} bm={bm} w={w} alpha={alpha_on}"
                try:
                    f = lambda: fwd_reg[(triton.cdiv(n, bm),)](s, Wa, ba, U, V, out, alpha, n, k, D=d, R=r,
                                                               BLOCK_M=bm, PREC=prec, STORE_ALPHA=alpha_on, num_warps=w)
                    out.zero_(); f()
                    e = err(out)
                    t = do_bench(f, warmup=50, rep=400) * 1e3 if dev == "cuda" else 0.0
                    res[name] = (t, e)
                except Exception as ex:  # noqa
                    res[name] = (float("nan"), repr(ex)[:200])
                print(f"{name:50s} {res[name][0]:8.1f} us err {res[name][1]}", flush=True)
    for kk, v in res.items():
        print(f"{kk:50s} {v[0]:8.1f} us err {v[1]}")
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "reg_variants.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
