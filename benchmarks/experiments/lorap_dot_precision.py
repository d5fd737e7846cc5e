"""Dot precision of the streamed LoRAP forward / backward on one GPU: time and error against float64.

    python benchmarks/experiments/lorap_dot_precision.py   # writes $OUT or /tmp/prec_variants.json
"""
import json, os, sys
sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch, triton
from triton.testing import do_bench
from qgnn.kernels import lorap as L
import lorap_forward_variants as FV  # noqa: E402  (its kernel fwd_v)

torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
n, d, k, r = 169_343, 256, 40, 2
g_, (s, Wa, ba, U, V) = FV.lorap_inputs(n, d, k, r, dev)
G = torch.randn(n, d, device=dev, generator=g_)
t64 = [x.double().requires_grad_() for x in (s, Wa, ba, U, V)]
ref = L.lorap_reference(*t64)
refg = torch.autograd.grad(ref, t64, G.double())
alpha_ref = torch.softmax(t64[0] @ t64[1].T + t64[2], 1).detach()
rel = lambda a, b: float((a.double() - b).norm() / b.norm())
out = torch.empty_like(s); alpha = torch.empty(n, k, device=dev)
res = {}
cfg = dict(BLOCK_M=64, BLOCK_C=64, num_warps=4, STAGES=3, STAGES2=3, SPLITK=1, PASS1=1, PASS2=1)
for prec in ("tf32x3", "bf16x3", "bf16x6", "tf32", "ieee"):
    for pass2 in (1, 0):
        c = dict(cfg, PASS2=pass2)
        name = f"fwd {prec} pass2={pass2}"
        try:
            f = lambda: FV.fwd_v[(triton.cdiv(n, 64),)](s, Wa, ba, U, V, out, alpha, n, k, D=d, R=r, K_PAD=64,
                                                        PREC=prec, STORE_ALPHA=True, **c)
            f(); torch.cuda.synchronize()
            t = do_bench(f, warmup=50, rep=400) * 1e3
            e = {"alpha": rel(alpha, alpha_ref)}
            if pass2:
                e["out"] = rel(out, ref.detach())
                for bprec in ("tf32x3", "bf16x3"):
                    L.dot_precision = lambda p=bprec: p
                    gr = L.lorap_backward_triton(G, s, Wa, ba, U, V, alpha=alpha)
                    e[f"grads(bwd {bprec})"] = {nm: rel(a, b) for nm, a, b in zip(["s", "W_a", "b_a", "U", "V"], [gr[0]] + list(gr[2:]), refg)}
                    if prec == "tf32x3":
                        res[f"bwd {bprec}"] = do_bench(lambda: L.lorap_backward_triton(G, s, Wa, ba, U, V, alpha=alpha), warmup=30, rep=300) * 1e3
            res[name] = (t, e)
        except Exception as ex:  # noqa
            res[name] = (float("nan"), repr(ex)[:300])
        print(name, res[name], flush=True)
res["s_plus_1"] = do_bench(lambda: s.add(1.0), warmup=50, rep=400) * 1e3
with torch.no_grad():
    res["torch_fwd"] = do_bench(lambda: L.lorap_reference(s, Wa, ba, U, V), warmup=50, rep=400) * 1e3
print({kk: v for kk, v in res.items() if not isinstance(v, tuple)})
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "prec_variants.json"), "w"), indent=1, default=str)
