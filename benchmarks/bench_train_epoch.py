"""Time training epochs of a config: median seconds per epoch and peak GPU memory, as JSON.

    python benchmarks/bench_train_epoch.py --config configs/ogbn_arxiv_gcn_fp32.yaml \\
        --device cuda --synthetic-arxiv --epochs 20 --out benchmarks/results/train_epoch_arxiv.json

``--synthetic-arxiv`` first writes a random dataset of ogbn-arxiv's size (169,343 nodes,
1,166,243 directed citations, symmetrised by the reader; 128 features; 40 classes) in OGB's
raw layout into a temporary data root (``qgnn.data.ogb.write_synthetic_ogb``; about 15 s)
and trains the config on it (``data.name`` becomes ``ogbn_arxiv``). ``--synthetic-size
NODES,EDGES,FEATURES,CLASSES`` changes that size (tests use a tiny one). Without it the
config's own dataset is read from ``--data-root``. The ``ogb`` package is not needed: the
reader falls back to reading the raw CSVs with pandas.

Timing follows the trainer: one epoch = ``task.train_epoch`` (forward, backward and optimizer
step over the training set, plus the quantization penalty), bracketed by device
synchronisation; the first ``--warmup`` epochs are timed but left out of the median.
Evaluation (all splits, no grad) is timed separately. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed epochs and evaluations (null on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ARXIV_SIZE = (169_343, 1_166_243, 128, 40)


def parse_size(text: str) -> tuple:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError("--synthetic-size takes NODES,EDGES,FEATURES,CLASSES (positive integers).")
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/ogbn_arxiv_gcn_fp32.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs after warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="epochs run before timing")
    parser.add_argument("--data-root", help="dataset root (default $QGNN_DATA or data/)")
    parser.add_argument("--synthetic-arxiv", action="store_true",
                        help="train on a random dataset of ogbn-arxiv's size in a temporary root")
    parser.add_argument("--synthetic-size", type=parse_size, default=ARXIV_SIZE, metavar="N,E,F,C",
                        help="nodes, edges, features, classes of --synthetic-arxiv (default ogbn-arxiv's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", help="write the JSON result here (also printed)")
    parser.add_argument("--profile", metavar="FILE",
                        help="after timing, profile one train epoch and one evaluation with "
                             "torch.profiler and write the top operators by device time here")
    args = parser.parse_args(argv)

    from qgnn.engine.cli import _run

    def go(_):
        with tempfile.TemporaryDirectory(prefix="qgnn_bench_") as tmp:
            result = bench(args, tmp)
        text = json.dumps(result, indent=2, sort_keys=True)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
        return 0

    return _run(go, argv)


def bench(args, tmp: str) -> dict:
    import torch

    from qgnn.data.ogb import write_synthetic_ogb
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import build, make_optimizer, resolve_device, set_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    data_root = args.data_root
    synthetic = None
    if args.synthetic_arxiv:
        nodes, edges, feats, classes = args.synthetic_size
        t0 = time.perf_counter()
        write_synthetic_ogb(tmp, "ogbn_arxiv", nodes, edges, feats, classes)
        synthetic = {"nodes": nodes, "edges": edges, "features": feats, "classes": classes,
                     "write_seconds": time.perf_counter() - t0}
        overrides.append("data.name=ogbn_arxiv")
        data_root = tmp
    cfg = load_config(args.config, overrides)
    dev = resolve_device(args.device)
    set_seed(cfg.train.seed)
    t0 = time.perf_counter()
    task, model, framework = build(cfg, dev, data_root)
    load_seconds = time.perf_counter() - t0
    optimizer = make_optimizer(cfg, model)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    train, evals = [], []
    for epoch in range(args.warmup + args.epochs):
        train.append(timed(lambda: task.train_epoch(model, optimizer, framework.penalty, cfg.train.grad_clip)))
        evals.append(timed(lambda: task.evaluate(model)))
    timed_train, timed_eval = train[args.warmup:], evals[args.warmup:]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        tables = []
        for name, fn in (("train epoch", lambda: task.train_epoch(model, optimizer, framework.penalty,
                                                                  cfg.train.grad_clip)),
                         ("evaluation", lambda: task.evaluate(model))):
            with profile(activities=acts) as prof:
                timed(fn)
            sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
            tables.append(f"== {name}\n" + prof.key_averages().table(sort_by=sort, row_limit=25))
        Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
        Path(args.profile).write_text("\n\n".join(tables) + "\n")
    stats = task.dataset.statistics()
    return {
        "config": cfg.name,
        "overrides": overrides,
        "dataset": stats,
        "synthetic": synthetic,
        "arch": cfg.model.arch,
        "method": cfg.quant.method,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "epochs_timed": len(timed_train),
        "warmup_epochs": args.warmup,
        "seconds_per_epoch": statistics.median(timed_train) if timed_train else None,
        "seconds_per_epoch_all": timed_train,
        "eval_seconds": statistics.median(timed_eval) if timed_eval else None,
        "warmup_seconds": train[: args.warmup],
        "peak_memory_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
        "load_seconds": load_seconds,
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }


if __name__ == "__main__":
    sys.exit(main())
