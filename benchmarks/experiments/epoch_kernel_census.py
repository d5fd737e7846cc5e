"""Every kernel of one training epoch, by name, for the ogbn-arxiv GCN at W4A4 with and
without LoRAP, and with Adam's default (foreach) or fused step, on one GPU.

Builds ``configs/ogbn_arxiv_gcn_fp32.yaml`` (3 layers, hidden 256) on a synthetic dataset of
ogbn-arxiv's size, warms up 3 epochs, profiles one (torch.profiler, CUDA kernels grouped by
name) and prints each run's total kernel time and its kernels, largest first; JSON to
``$OUT/epoch_kernel_census.json``. Where ``bench_train_epoch.py --profile`` lists the top 25
operators (whose self times mix operators and kernels), this lists kernels only.

    python benchmarks/experiments/epoch_kernel_census.py      # RUNS="w4a4 lorap_alone"

``RUNS``: names ``<mode>[+fused_adam]``, modes as in ``run_ab_epoch.sh`` (w4a4, lorap,
lorap_alone), or lorap_unfused / lorap_alone_unfused (``prompt.fused=false``). ``DEV=cpu SIZE=300,1000,16,5`` runs on the CPU (tests).
"""
import collections
import json
import os
import sys
import tempfile

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.data.ogb import write_synthetic_ogb  # noqa: E402
from qgnn.engine.config import load_config  # noqa: E402
from qgnn.engine.trainer import build, make_optimizer, resolve_device, set_seed  # noqa: E402

DEV = os.environ.get("DEV", "cuda")
SIZE = tuple(int(v) for v in os.environ.get("SIZE", "169343,1166243,128,40").split(","))
RUNS = os.environ.get("RUNS", "w4a4 lorap_alone w4a4+fused_adam lorap_alone+fused_adam").split()
W4 = ["quant.method=qat", "quant.weight_bits=4", "quant.act_bits=4"]
MODES = {"w4a4": W4, "lorap_alone": W4 + ["prompt.aggregation=lorap"],
         "lorap": W4 + ["prompt.node=gpf_plus", "prompt.aggregation=lorap"]}
# The same prompts with the fused Triton LoRAP (and GPF-plus) kernels off: torch ops.
MODES.update({f"{name}_unfused": MODES[name] + ["prompt.fused=false"]
              for name in ("lorap_alone", "lorap")})


def cuda_kernels(fn, reps=1, warmup=3, dev="cuda", width=90):
    """Run ``fn`` ``warmup`` times, then profile ``reps`` calls: ``{kernel name: [us, count]}``
    summed over them (CUDA kernels only, names cut to ``width``; empty off CUDA)."""
    for _ in range(warmup):
        fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(reps):
            fn()
        if dev == "cuda":
            torch.cuda.synchronize()
    kernels = collections.defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if dev == "cuda" and ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels[ev.name[:width]]
            k[0] += ev.time_range.elapsed_us()
            k[1] += 1
    return dict(kernels)


def census(root, run):
    mode, _, variant = run.partition("+")
    cfg = load_config("configs/ogbn_arxiv_gcn_fp32.yaml", ["data.name=ogbn_arxiv"] + MODES[mode])
    dev = resolve_device(DEV)
    set_seed(cfg.train.seed)
    task, model, framework = build(cfg, dev, root)
    optimizer = make_optimizer(cfg, model)
    if variant == "fused_adam":
        for group in optimizer.param_groups:
            group["foreach"], group["fused"] = False, True
    elif variant:
        raise SystemExit(f"unknown variant {variant!r}")

    def epoch():
        task.train_epoch(model, optimizer, framework.penalty, cfg.train.grad_clip)

    kernels = cuda_kernels(epoch, dev=DEV)
    rows = sorted(((n, us, c) for n, (us, c) in kernels.items()), key=lambda r: -r[1])
    return {"total_kernel_us": sum(r[1] for r in rows), "launches": sum(r[2] for r in rows),
            "kernels": [{"name": n, "us": round(us, 1), "count": c} for n, us, c in rows]}


def main():
    out = {}
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_ogb(root, "ogbn_arxiv", *SIZE, seed=0)
        for run in RUNS:
            out[run] = census(root, run)
            r = out[run]
            print(f"== {run}: {r['total_kernel_us']:.1f} us in {r['launches']} kernels", flush=True)
            for k in r["kernels"][:60]:
                print(f"  {k['us']:9.1f} us {k['count']:4d}x  {k['name']}")
    path = os.path.join(os.environ.get("OUT", "/tmp"), "epoch_kernel_census.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
