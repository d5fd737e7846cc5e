"""Fake quantization on one CUDA GPU: the Triton pass against the same maths as torch ops.

    python benchmarks/bench_fake_quant.py --out fake_quant.json

For an ``(169343, 256)`` float32 tensor (one GCN activation at ogbn-arxiv size) and grids per
tensor, per row and per column at 8 and 4 bits, with both gradient rules: checks that the
Triton forward and backward are bitwise equal to :func:`qgnn.quant.functional.fake_quantize_reference`
on the GPU, and times both (median of ``triton.testing.do_bench``), forward alone and
forward + backward, against the floor ``bytes / copy bandwidth`` (forward: read ``x``, write
the output; the clipped backward also reads the gradient and writes its own). Then the same
check and timing for a whole ``FakeQuantize`` call in train mode (observer update, grid
formed from its range on chip, rounding) against ``FakeQuantize(fused=False)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_kernels import bench, copy_bandwidth, env_info  # noqa: E402

from qgnn.quant import functional as QF  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    n, d = 169_343, 256
    results = {"env": env_info(), "shape": [n, d], "copy_GBps": copy_bandwidth() / 1e9, "rows": []}
    bw = results["copy_GBps"] * 1e9
    x = torch.randn(n, d, device="cuda") * 3
    g = torch.randn(n, d, device="cuda")
    for bits in (8, 4):
        qmin, qmax = QF.int_range(bits, False)
        for gran, shape in (("per_tensor", ()), ("per_row", (n, 1)), ("per_column", (d,))):
            scale = torch.rand(shape, device="cuda") * 0.05 + 0.01
            zero = torch.randint(qmin, qmax + 1, shape, device="cuda").float()
            for gradient in ("ste", "clipped"):
                xa = x.clone().requires_grad_()
                xb = x.clone().requires_grad_()
                out = QF.fake_quantize(xa, scale, zero, qmin, qmax, gradient)
                ref = QF.fake_quantize_reference(xb, scale, zero, qmin, qmax, gradient)
                (ga,) = torch.autograd.grad(out, xa, g)
                (gb,) = torch.autograd.grad(ref, xb, g)
                fused_fn = lambda: QF.fake_quantize(x, scale, zero, qmin, qmax, gradient)  # noqa: E731
                torch_fn = lambda: QF.fake_quantize_reference(x, scale, zero, qmin, qmax, gradient)  # noqa: E731

                def fwd_bwd(fn):
                    def run():
                        return torch.autograd.grad(fn(xa), xa, g)
                    return run

                t = {
                    "fused_fwd": bench(fused_fn),
                    "torch_fwd": bench(torch_fn),
                    "fused_fwdbwd": bench(fwd_bwd(lambda v: QF.fake_quantize(v, scale, zero, qmin, qmax, gradient))),
                    "torch_fwdbwd": bench(fwd_bwd(lambda v: QF.fake_quantize_reference(v, scale, zero, qmin, qmax, gradient))),
                }
                row = {"bits": bits, "granularity": gran, "gradient": gradient,
                       "forward_bitwise_equal": bool(torch.equal(out, ref)),
                       "grad_bitwise_equal": bool(torch.equal(ga, gb)),
                       "floor_fwd_ms": 2 * n * d * 4 / bw * 1e3, "times_ms": t}
                results["rows"].append(row)
                print(f"W{bits} {gran:10s} {gradient:7s} equal fwd={row['forward_bitwise_equal']} "
                      f"grad={row['grad_bitwise_equal']} | fwd {t['fused_fwd'] * 1e3:6.1f} us vs torch "
                      f"{t['torch_fwd'] * 1e3:6.1f} ({t['torch_fwd'] / t['fused_fwd']:.1f}x; floor "
                      f"{row['floor_fwd_ms'] * 1e3:.0f}) | fwd+bwd {t['fused_fwdbwd'] * 1e3:6.1f} vs "
                      f"{t['torch_fwdbwd'] * 1e3:6.1f} ({t['torch_fwdbwd'] / t['fused_fwdbwd']:.1f}x)", flush=True)
    # FakeQuantize itself (observer update + grid from its range + rounding), train mode:
    # the fused path forms (scale, zero point) on chip; fused=False runs the torch ops.
    from qgnn.quant import FakeQuantize, MinMaxObserver

    results["module_rows"] = []
    for symmetric in (False, True):
        for gran in ("per_tensor", "per_row", "per_column"):
            for gradient in ("ste", "clipped"):
                mods = [FakeQuantize(bits=4, symmetric=symmetric, gradient=gradient, fused=f,
                                     observer=MinMaxObserver(0.1, gran)).cuda().train() for f in (True, False)]
                outs, grads = [], []
                for m in mods:
                    m(x * 0.9)
                    xa = x.clone().requires_grad_()
                    out = m(xa)
                    outs.append(out)
                    grads.append(torch.autograd.grad(out, xa, g)[0])
                t = {"fused_module_fwd": bench(lambda: mods[0](x)), "torch_module_fwd": bench(lambda: mods[1](x))}
                row = {"symmetric": symmetric, "granularity": gran, "gradient": gradient,
                       "forward_bitwise_equal": bool(torch.equal(outs[0], outs[1])),
                       "grad_bitwise_equal": bool(torch.equal(grads[0], grads[1])), "times_ms": t}
                results["module_rows"].append(row)
                print(f"FakeQuantize sym={symmetric!s:5} {gran:10s} {gradient:7s} equal fwd="
                      f"{row['forward_bitwise_equal']} grad={row['grad_bitwise_equal']} | module fwd "
                      f"{t['fused_module_fwd'] * 1e3:6.1f} us vs torch ops {t['torch_module_fwd'] * 1e3:6.1f}",
                      flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
