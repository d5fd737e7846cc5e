"""A layer's bias added inside the kernel before it gives what adding it after gives, on a GPU.

- ``FakeQuantize.forward_add(s, bias)`` (the aggregate quantizer, no prompt) against the
  quantizer followed by ``+ bias``: outputs bit for bit, the gradient of ``s`` bit for bit,
  the bias's gradient to float32 summation order; training (observing) and evaluation.
- LoRAP with the bias inside (``lorap_inject(..., bias=)``) against float64, as the kernel
  benchmark's correctness check does (``bench_kernels.lorap_errors``), tf32 off.

Prints one line per check and exits 1 if any fails.

    python benchmarks/diagnostics/bias_inside_check.py
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402


def forward_add_check(n=169_343, d=256) -> bool:
    from qgnn.quant import FakeQuantize

    gen = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(n, d, device="cuda", generator=gen) * 2
    bias = torch.randn(d, device="cuda", generator=gen)
    g = torch.randn(n, d, device="cuda", generator=gen)
    q1, q2 = FakeQuantize(bits=4).cuda(), FakeQuantize(bits=4).cuda()
    ok = True
    for training in (True, False):
        results = []
        for inside, q in ((True, q1), (False, q2)):
            q.train(training)
            x, b = s.clone().requires_grad_(), bias.clone().requires_grad_()
            out = q.forward_add(x, b) if inside else q(x) + b
            results.append((out,) + torch.autograd.grad(out, [x, b], g))
        (o1, dx1, db1), (o2, dx2, db2) = results
        db_err = ((db1 - db2).norm() / db2.norm()).item()
        good = torch.equal(o1, o2) and torch.equal(dx1, dx2) and db_err < 1e-5
        ok &= good
        print(f"{'ok     ' if good else 'FAILED '} forward_add, training={training}: outputs and "
              f"ds {'equal' if torch.equal(o1, o2) and torch.equal(dx1, dx2) else 'DIFFER'}, "
              f"bias gradient relative difference {db_err:.1e}")
    return ok


def lorap_bias_check() -> bool:
    import os

    import bench_kernels as bk

    os.environ["QGNN_KERNEL_POISON"] = "1"  # outputs NaN-filled first: unwritten ones show
    torch.backends.cuda.matmul.allow_tf32 = False
    ok = True
    for shape in ((169_343, 256, 40, 2, None), (1001, 24, 5, 2, None), (555, 33, 7, 1, 19)):
        errs, written = bk.lorap_errors(*shape, seed=7, bias=True)
        worst = max(errs.values())
        good = written and worst < 1e-4
        ok &= good
        print(f"{'ok     ' if good else 'FAILED '} LoRAP with the bias inside, shape {shape[:4]}: "
              f"worst relative error {worst:.1e} (bias gradient {errs['dbias']:.1e}), "
              f"every element written: {written}")
    return ok


if __name__ == "__main__":
    good = forward_add_check() & lorap_bias_check()
    sys.exit(0 if good else 1)
