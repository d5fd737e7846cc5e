"""The aggregate quantizer's rounding inside the LoRAP kernels, against its own pass, on one
GPU with tf32 off.

A layer's ``Q_aggregate`` (vanilla QAT: per-tensor affine fake quantization, plain STE) runs
just before LoRAP. Either the quantizer makes its own pass over ``s`` and the head reads its
output ("separate": ``FakeQuantize.quantize``, then ``lorap_inject``), or the quantizer hands
its grid to the head, whose kernels round ``s`` as they read it ("inside":
``grid_for_consumer``, then ``lorap_inject(..., input_grid=)``). For N=169,343, k=40, r=2 and
d = 256 and 40 (a hidden and the last layer of the ogbn-arxiv GCN): forward, and forward +
backward through autograd, each eagerly (``do_bench``, host included) and as a CUDA graph
(GPU time), interleaved over ROUNDS rounds, medians; and each path's worst relative error
(output and every gradient) against float64 on the same rounded input, whether the two
paths' outputs are equal (or how far apart), and whether the rounding inside equals the
fake-quantization kernel's on values within a few ulps of the grid's rounding boundaries
(``V`` = 0).

    python benchmarks/experiments/lorap_input_grid.py      # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1 QGNN_FORCE_TRITON=1``: errors only. The
"inside" path keeps the codes of ``s`` (uint8) for its backward instead of ``s``.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.kernels import lorap_inject, lorap_reference  # noqa: E402
from qgnn.quant import FakeQuantize  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
N = int(os.environ.get("NROWS", 169_343))
DEV = os.environ.get("DEV", "cuda")
ROUNDS = int(os.environ.get("ROUNDS", 5))
WIDTHS = [int(w) for w in os.environ.get("WIDTHS", "256,40").split(",")]
K, R = 40, 2


def rel(a, b):
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


def setup(d):
    g = torch.Generator(device=DEV).manual_seed(d)
    s = torch.randn(N, d, device=DEV, generator=g)
    params = [torch.randn(K, d, device=DEV, generator=g) / d ** 0.5,
              torch.randn(K, device=DEV, generator=g),
              torch.randn(K, R, device=DEV, generator=g) / K ** 0.5,
              torch.randn(R, d, device=DEV, generator=g)]
    quantizer = FakeQuantize(4).to(DEV)
    quantizer(s)  # observe once, then evaluation mode: both paths round on the same range
    quantizer.eval()
    return s, [p.requires_grad_() for p in params], quantizer


def paths(quantizer):
    return {
        "separate": lambda s, *p: lorap_inject(quantizer.quantize(s), *p),
        "inside": lambda s, *p: lorap_inject(s, *p, input_grid=quantizer.grid_for_consumer(s)),
    }


def boundary_check(d, seeds=4):
    """Rounding inside the head (``V`` = 0) against the quantizer's own kernel on values at and
    near ``(j + 0.5) scale``, several ranges: the number of elements that differ."""
    from qgnn.kernels import lorap as lk
    from qgnn.kernels.fake_quant import RangeGrid

    differ = 0
    for seed in range(seeds):
        g = torch.Generator(device=DEV).manual_seed(seed)
        lo, hi = sorted((torch.randn(2, device=DEV, generator=g) * 3).tolist())
        grid = RangeGrid.from_range(torch.tensor(lo, device=DEV), torch.tensor(hi, device=DEV),
                                    0, 15, False)
        scale, zero_point = grid.qparams()
        j = torch.randint(-2, 18, (N, d), device=DEV, generator=g).float() - zero_point
        x = (j + 0.5) * scale
        ulps = torch.randint(-3, 4, (N, d), device=DEV, generator=g).float()
        x = (x + ulps * torch.finfo(torch.float32).eps * x.abs()).contiguous()
        wa = torch.randn(K, d, device=DEV, generator=g)
        out = lk.lorap_forward_triton(x, wa, torch.zeros(K, device=DEV),
                                      torch.randn(K, R, device=DEV, generator=g),
                                      torch.zeros(R, d, device=DEV), input_grid=grid)
        differ += int((out != grid.rounded(x)).sum())
    return differ


def errors(d):
    s, params, quantizer = setup(d)
    grad_out = torch.randn_like(s)
    q64 = quantizer.quantize(s).double().requires_grad_()
    p64 = [p.detach().double().requires_grad_() for p in params]
    ref = lorap_reference(q64, *p64)
    ref_grads = torch.autograd.grad(ref, [q64] + p64, grad_out.double())
    out, results = {}, {}
    for name, fn in paths(quantizer).items():
        x = s.clone().requires_grad_()
        res = fn(x, *params)
        grads = torch.autograd.grad(res, [x] + params, grad_out)
        out[name] = max([rel(res, ref)] + [rel(a, b) for a, b in zip(grads, ref_grads)])
        results[name] = [res] + list(grads)
    a, b = results["separate"][0], results["inside"][0]
    out["outputs_equal"] = torch.equal(a, b)
    out["outputs_max_rel_difference"] = ((a - b).abs().max() / b.abs().max()).item()
    out["boundary_elements_differing"] = boundary_check(d)
    return out


def timings(d):
    from triton.testing import do_bench, do_bench_cudagraph

    s, params, quantizer = setup(d)
    grad_out = torch.randn_like(s)
    x = s.clone().requires_grad_()
    calls = {}
    for name, fn in paths(quantizer).items():
        calls[f"fwd {name}"] = lambda fn=fn: fn(s, *[p.detach() for p in params])
        calls[f"fwd+bwd {name}"] = lambda fn=fn: torch.autograd.grad(fn(x, *params), [x] + params,
                                                                     grad_out)
    times = {f"{how} {name}": [] for name in calls for how in ("eager", "graph")}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            times[f"eager {name}"].append(do_bench(call, warmup=25, rep=100) * 1e3)
            times[f"graph {name}"].append(do_bench_cudagraph(call, rep=100) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def main():
    result = {"N": N, "k": K, "r": R, "rounds": ROUNDS, "allow_tf32": False,
              "device": torch.cuda.get_device_name() if DEV == "cuda" else DEV}
    for d in WIDTHS:
        row = {"max_rel_error": errors(d)}
        if ROUNDS:
            row["us"] = timings(d)
        result[f"d={d}"] = row
        print(f"d={d}", json.dumps(row, indent=1), flush=True)
    path = os.path.join(os.environ.get("OUT", "/tmp"), "lorap_input_grid.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
