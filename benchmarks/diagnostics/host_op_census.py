"""Count the aten ops the host dispatches in one training epoch and one evaluation of a config,
grouped by the qgnn source line that issued them: where per-call host work goes.

    QGNN_FORCE_TRITON=1 TRITON_INTERPRET=1 python benchmarks/diagnostics/host_op_census.py \\
        --set quant.method=qat --set quant.weight_bits=4 --set quant.act_bits=4

Runs on the CPU on a small synthetic ogbn-arxiv-layout dataset (300 nodes) with the GCN of
configs/ogbn_arxiv_gcn_fp32.yaml. With ``QGNN_FORCE_TRITON=1 TRITON_INTERPRET=1`` the
layers take their GPU code path (Triton kernels interpreted); ops issued inside the Triton
interpreter are left out, so the count is what the host dispatches besides kernel launches.
The optimizer runs its CPU (for-loop) implementation, unlike on CUDA. ``--repo TREE`` counts
another source tree.
"""

import argparse
import collections
import os
import sys
import tempfile
import traceback
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repo", default=None, help="source tree to import qgnn from (default: this one)")
    parser.add_argument("--top", type=int, default=15, help="source lines to list per phase")
    args = parser.parse_args(argv)
    repo = Path(args.repo or Path(__file__).resolve().parents[2]).resolve()
    sys.path.insert(0, str(repo))
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from qgnn.data.ogb import write_synthetic_ogb
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import build, make_optimizer, set_seed

    class Census(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.by_line = collections.defaultdict(collections.Counter)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            stack = traceback.extract_stack(limit=40)
            if not any("triton/runtime/interpreter" in f.filename for f in stack):
                line = next((f"{os.path.relpath(f.filename, repo)}:{f.lineno}" for f in reversed(stack[:-1])
                             if f.filename.startswith(str(repo / "qgnn"))), "(outside qgnn)")
                self.by_line[line][func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    root = tempfile.mkdtemp()
    write_synthetic_ogb(root, "ogbn_arxiv", 300, 1200, 128, 40)
    cfg = load_config(str(repo / "configs" / "ogbn_arxiv_gcn_fp32.yaml"), ["data.name=ogbn_arxiv"] + args.overrides)
    set_seed(cfg.train.seed)
    task, model, framework = build(cfg, torch.device("cpu"), root)
    optimizer = make_optimizer(cfg, model)
    phases = (("train epoch", lambda: task.train_epoch(model, optimizer, framework.penalty, cfg.train.grad_clip)),
              ("evaluation", lambda: task.evaluate(model)))
    for _, fn in phases:  # warm-up: quantizers initialise their ranges on the first pass
        fn()
    for name, fn in phases:
        census = Census()
        with census:
            fn()
        total = sum(sum(c.values()) for c in census.by_line.values())
        print(f"== {name}: {total} aten ops")
        for line, ops in sorted(census.by_line.items(), key=lambda kv: -sum(kv[1].values()))[:args.top]:
            print(f"  {sum(ops.values()):4d}  {line}  {dict(ops.most_common(5))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
