"""LoRAP forward (alpha written, as in training) and backward of one source tree at N=169,343,
k=40, r=2, widths 40, 7 and 256, tf32 off, on one GPU: median of 3 ``do_bench`` runs each,
and the forward's relative error against float64. Run it alternately on two trees for an A/B:

    for i in 1 2; do for t in OLD_TREE .; do python benchmarks/experiments/lorap_tree_ab.py $t; done; done
"""
import os
import statistics
import sys

TREE = sys.argv[1] if len(sys.argv) > 1 else "."
sys.path.insert(0, os.path.abspath(TREE))

import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)

torch.backends.cuda.matmul.allow_tf32 = False


def median_us(fn):
    return statistics.median(do_bench(fn, warmup=25, rep=150) * 1e3 for _ in range(3))


for d in (40, 7, 256):
    n, k, r = 169_343, 40, 2
    g, (s, wa, ba, u, v) = lorap_inputs(n, d, k, r, "cuda")
    gout = torch.randn(n, d, device="cuda", generator=g)
    alpha, out = torch.empty(n, k, device="cuda"), torch.empty_like(s)
    ref = L.lorap_reference(s.double(), wa.double(), ba.double(), u.double(), v.double())
    L.lorap_forward_triton(s, wa, ba, u, v, out=out, alpha_out=alpha)
    err = float((out.double() - ref).norm() / ref.norm())
    fwd = median_us(lambda: L.lorap_forward_triton(s, wa, ba, u, v, out=out, alpha_out=alpha))
    bwd = median_us(lambda: L.lorap_backward_triton(gout, s, wa, ba, u, v, alpha=alpha))
    print(f"{TREE:16s} d={d:3d} fwd+alpha {fwd:7.1f} us  bwd {bwd:7.1f} us  err {err:.1e}", flush=True)
