"""The whole LoRAP backward (``lorap_backward_triton``) at N=169,343 and the given d:k:r shapes
(default d=256 and d=40 at k=40, r=2), tf32 off and on, on one GPU: the library's choice and
variants of its tunables (module constants patched for the call), 3 round-robin rounds,
median (eager ``do_bench``: calls of a few hundred microseconds are partly host-bound;
``lorap_split_w_ab.py`` gives GPU time), and each one's worst relative error (ds, dW_a,
db_a, dU, dV) against float64.

    python benchmarks/experiments/lorap_backward_variants.py [--tree DIR] [--only-current]
        [--shapes 256:40:2,40:40:2] [--tf32 off,on] [--no-input-grad]

``--tree DIR`` imports qgnn from another source tree (e.g. a worktree of an older commit) to
time its backward; run this script alternately on two trees for an A/B. ``--only-current``
skips the variants (an older tree may lack their constants).
"""
import argparse
import json
import os
import statistics
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--tree", default=".", help="source tree whose qgnn is timed")
ap.add_argument("--only-current", action="store_true", help="time the library's choice only")
ap.add_argument("--out", help="JSON file for the results")
ap.add_argument("--shapes", default="256:40:2,40:40:2",
                help="d:k:r triples, comma-separated (GPF-plus at F=128, k=10: 128:10:10)")
ap.add_argument("--tf32", default="off,on", help="tf32 settings to run: off, on or both")
ap.add_argument("--variants", help="names of the variants to run, comma-separated")
ap.add_argument("--no-input-grad", action="store_true",
                help="parameter gradients only (a prompt on the data: no ds)")
args = ap.parse_args()
sys.path.insert(0, os.path.abspath(args.tree))

import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import lorap_inputs, patched  # noqa: E402  (shared helpers)

NO_SPLIT_K = {"DWA_MIN_ALIGN": 10**9}  # dW_a through cuBLAS
EARLIER = {"BWD_STREAM_BLOCK_M": 32, "BWD_STREAM_WARPS": 2, "BWD_STREAM_STAGES": 1}
VARIANTS = {"current": {}, "cublas dW_a": NO_SPLIT_K, "32 rows, 2 warps, 1 stage": EARLIER,
            "32 rows, 2 warps, 1 stage, cublas dW_a": {**EARLIER, **NO_SPLIT_K},
            "64 rows, 4 warps, 1 stage": {"BWD_STREAM_STAGES": 1},
            "64 rows, 4 warps, 2 stages": {"BWD_STREAM_STAGES": 2},
            "rank terms as tensor-core products": {"BWD_STREAM_RANK_DOT_MIN_RANK": 1}}
if args.only_current:
    VARIANTS = {"current": {}}
elif args.variants:
    VARIANTS = {name: VARIANTS[name] for name in args.variants.split(",")}


def main():
    res = {"tree": args.tree, "device": torch.cuda.get_device_name(), "us": {}}
    input_grad = not args.no_input_grad
    for tf32 in [{"off": False, "on": True}[x] for x in args.tf32.split(",")]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for shape in args.shapes.split(","):
            (d, k, r), n = map(int, shape.split(":")), 169_343
            g, (s, wa, ba, u, v) = lorap_inputs(n, d, k, r, "cuda")
            gout = torch.randn(n, d, device="cuda", generator=g)
            alpha = L.lorap_alpha(s, wa, ba)
            t64 = [x.double().requires_grad_() for x in (s, wa, ba, u, v)]
            ref = torch.autograd.grad(L.lorap_reference(*t64), t64, gout.double())
            for name, patch in VARIANTS.items():  # worst relative error of ds, dW_a, db_a, dU, dV
                with patched(L, patch):
                    got = L.lorap_backward_triton(gout, s, wa, ba, u, v, alpha=alpha,
                                                  input_grad=input_grad)
                pairs = zip([got[0]] + list(got[2:]), ref)
                res.setdefault("rel_err", {})[f"tf32={tf32} {shape} {name}"] = max(
                    float((a.double() - b).norm() / b.norm()) for a, b in pairs if a is not None)
            times = {name: [] for name in VARIANTS}
            for _ in range(3):
                for name, patch in VARIANTS.items():
                    with patched(L, patch):
                        times[name].append(do_bench(
                            lambda: L.lorap_backward_triton(gout, s, wa, ba, u, v, alpha=alpha,
                                                            input_grad=input_grad),
                            warmup=25, rep=150) * 1e3)
            for name, t in times.items():
                key = f"tf32={tf32} {shape} {name}"
                res["us"][key] = statistics.median(t)
                print(f"{key:70s} {res['us'][key]:7.1f} us  err {res['rel_err'][key]:.1e}",
                      flush=True)
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
