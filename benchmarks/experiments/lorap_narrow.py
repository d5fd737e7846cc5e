"""LoRAP kernels on narrow features: a GCN's last layer has one column per class (7 for Cora,
40 for ogbn-arxiv), where the streamed kernels' tunables, chosen at d=256, see a single
column chunk. Times forward (with alpha written, as in training), backward row pass variants
and ``dW_a`` variants at N=169,343, k=40, r=2, tf32 off, for each width in ``WIDTHS``, with
the error of each against float64.

    python benchmarks/experiments/lorap_narrow.py      # JSON to $OUT or /tmp

``DEV=cpu NROWS=200 ROUNDS=0 TRITON_INTERPRET=1 WIDTHS=40`` checks the variants on the CPU.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from lorap_backward_parts import dwa_splitk  # noqa: E402
from lorap_forward_variants import lorap_inputs  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
WIDTHS = [int(w) for w in os.environ.get("WIDTHS", "40,7,64,128").split(",")]
# forward: (mode, block_m, block_c, warps, stages, stages_out, maxnreg); None = library default
FWD = [("stream", None, None, None, None, None, None),  # the library's choice (timed pick)
       ("stream", 64, 64, 4, 1, 1, 160), ("stream", 64, 64, 4, 1, 1, None),
       ("stream", 32, 64, 4, 1, 1, None), ("stream", 32, 64, 2, 1, 1, None),
       ("stream", 16, 64, 2, 1, 1, None), ("stream", 64, 64, 4, 2, 2, None),
       ("stream", 128, 64, 8, 1, 1, None), ("split", None, None, None, None, None, None),
       ("fused", None, None, None, None, None, None)]
# backward: (mode, block_m, block_c, warps, stages)
BWD = [("stream", None, None, None, None), ("stream", 32, 64, 2, 1), ("stream", 32, 64, 4, 1),
       ("stream", 64, 64, 4, 1), ("stream", 16, 64, 2, 1), ("stream", 16, 64, 1, 1),
       ("stream", 64, 64, 8, 1), ("rows", None, None, None, None)]
# dW_a: split-K (block_m, block_c, splits, warps, stages) or "torch.mm"
DWA = ["torch.mm", "library", (32, 64, 264, 2, 3), (32, 64, 132, 2, 3), (64, 64, 264, 4, 3),
       (32, 32, 264, 2, 3), (16, 64, 264, 1, 3), (32, 64, 528, 2, 2)]


def main():
    n, k, r = int(os.environ.get("NROWS", 169_343)), 40, 2
    rounds = int(os.environ.get("ROUNDS", 3))
    res = {"n": n, "rounds": rounds, "widths": {}}
    for d in WIDTHS:
        g, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, DEV)
        gout = torch.randn(n, d, device=DEV, generator=g)
        ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
        out, alpha = torch.empty_like(s), torch.empty(n, k, device=DEV)
        L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha)
        a64 = torch.softmax(s.double() @ Wa.double().t() + ba.double(), 1)
        d_alpha = (gout.double() @ V.double().t()) @ U.double().t()
        dsc64 = a64 * (d_alpha - (a64 * d_alpha).sum(1, keepdim=True))
        dwa64 = dsc64.t() @ s.double()
        ds64 = gout.double() + dsc64 @ Wa.double()
        dsc = dsc64.float().contiguous()

        def rel(x, y):
            return float((x.double() - y).norm() / y.norm())

        fns, rows = {}, {}
        for v in FWD:
            mode, bm, bc, w, st, st_out, reg = v
            f = (lambda mode=mode, bm=bm, bc=bc, w=w, st=st, st_out=st_out, reg=reg: L.lorap_forward_triton(
                s, Wa, ba, U, V, out=out, alpha_out=alpha, mode=mode, block_m=bm, block_c=bc,
                num_warps=w, num_stages=st, stages_out=st_out, maxnreg=reg))
            fns[f"fwd {v}"] = f
        for v in BWD:
            mode, bm, bc, w, st = v
            fns[f"bwd {v}"] = (lambda mode=mode, bm=bm, bc=bc, w=w, st=st: L.lorap_backward_triton(
                gout, s, Wa, ba, U, V, alpha=alpha, mode=mode, block_m=bm, block_c=bc, num_warps=w,
                stages=st))
        for v in DWA:
            if v == "torch.mm":
                fns["dwa torch.mm"] = lambda: torch.mm(dsc.t(), s)
            elif v == "library":
                fns["dwa library"] = lambda: L.lorap_dwa(dsc, s)
            else:
                fns[f"dwa {v}"] = (lambda v=v: dwa_splitk(dsc, s, v)[0])
        for name, f in fns.items():
            out.fill_(float("nan"))
            try:
                got = f()
            except Exception as exc:  # a variant the compiler refuses
                rows[name] = {"error": repr(exc)[:300]}
                continue
            if name.startswith("fwd"):
                err = rel(out, ref)
            elif name.startswith("bwd"):
                err = max(rel(got[0], ds64), rel(got[2], dwa64))
            else:
                err = rel(got, dwa64)
            rows[name] = {"rel_err": err, "times_us": []}
        if DEV == "cuda":
            for _ in range(rounds):
                for name, f in fns.items():
                    if "error" not in rows[name]:
                        rows[name]["times_us"].append(do_bench(f, warmup=25, rep=150) * 1e3)
            rows["s + 1"] = {"times_us": [do_bench(lambda: s.add(1.0), warmup=25, rep=150) * 1e3]}
        for name, row in rows.items():
            row["us"] = statistics.median(row["times_us"]) if row.get("times_us") else float("nan")
            print(f"d={d:4d} {name:60s} {row['us']:8.1f} us  err {row.get('rel_err', row.get('error'))}",
                  flush=True)
        res["widths"][d] = rows
    if DEV == "cuda":
        res["device"] = torch.cuda.get_device_name()
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "lorap_narrow.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
