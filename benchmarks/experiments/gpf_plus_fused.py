"""GPF-plus on the input features, ``x + softmax(x W_a^T + b_a) P``: the fused LoRAP kernel
(``U = I``) against torch ops, forward and forward + backward (parameter gradients only, as
for a prompt on the data), N=169,343, F=128, k=10, tf32 off, on one GPU; median of ROUNDS
interleaved ``do_bench`` runs, and the fused path's relative error against float64.

    python benchmarks/experiments/gpf_plus_fused.py      # JSON to $OUT or /tmp
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.prompts import GPFPlus  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False


def main():
    n, f, k = 169_343, 128, 10
    rounds = int(os.environ.get("ROUNDS", 5))
    torch.manual_seed(0)
    prompt = GPFPlus(f, k).cuda()
    nn.init.normal_(prompt.bases, std=0.1)
    x = torch.randn(n, f, device="cuda")
    g = torch.randn(n, f, device="cuda")
    params = list(prompt.parameters())

    def run(fused, backward):
        prompt.fused = fused
        out = prompt(x)
        if backward:
            torch.autograd.grad(out, params, g)
        return out

    fns = {f"{'fused' if fu else 'torch ops'} {'fwd+bwd' if b else 'fwd'}": (lambda fu=fu, b=b: run(fu, b))
           for fu in (True, False) for b in (False, True)}
    with torch.no_grad():
        x64 = x.double()
        ref = x64 + torch.softmax(x64 @ prompt.score.weight.double().t() + prompt.score.bias.double(), -1) \
            @ prompt.bases.double()
    res = {"device": torch.cuda.get_device_name(), "n": n, "f": f, "k": k,
           "fused_rel_err": float((run(True, False).double() - ref).norm() / ref.norm()), "us": {}}
    times = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(do_bench(fn, warmup=10, rep=80) * 1e3)
    for name, t in times.items():
        res["us"][name] = statistics.median(t)
        print(f"{name:20s} {res['us'][name]:8.1f} us", flush=True)
    print(f"fused relative error {res['fused_rel_err']:.1e}")
    if os.environ.get("PROFILE") == "1":  # the kernels of each forward + backward
        from torch.profiler import ProfilerActivity, profile

        for fused in (True, False):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    run(fused, True)
                torch.cuda.synchronize()
            print(f"== fused={fused}, 3 calls\n"
                  + prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12))
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "gpf_plus_fused.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
