"""Host cost of qgnn's per-call work on CUDA: microseconds per call on tensors so small that
the GPU waits for the host (so the time is Python, dispatch and kernel launches).

    python benchmarks/bench_host_overhead.py --out host.json
    python benchmarks/bench_host_overhead.py --repo /tmp/base --out base.json   # another tree

Rows: a ``FakeQuantize`` call (4 bits, momentum min/max; training: observe + round, and
evaluation: round), ``torch.add`` and ``torch.aminmax`` (one eager op each), an empty Triton
kernel launch, and a 3-layer GCN (64 wide) with vanilla QAT W4A4 on a 100-node path graph:
one training forward + backward, one evaluation forward. Each row: mean over ``--calls``
back-to-back calls after warm-up, bracketed by device synchronisation.
"""

import argparse
import json
import sys
import time


def _tree_name(tree) -> str:
    """The tree's commit (short hash), or its folder name outside git."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    return tree.name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=None, help="import qgnn from this source tree (default: this one)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    from pathlib import Path

    sys.path.insert(0, str(Path(args.repo or Path(__file__).resolve().parents[1]).resolve()))
    import torch
    import triton
    import triton.language as tl

    import qgnn
    from qgnn.graph import Graph
    from qgnn.nn import NodeClassifier
    from qgnn.quant import FakeQuantize, QuantConfig, build_quantization

    dev = torch.device(args.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def per_call_us(fn, calls):
        for _ in range(min(100, calls)):
            fn()
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        return (time.perf_counter() - t) / calls * 1e6

    @triton.jit
    def empty_kernel(p, n, B: tl.constexpr):
        o = tl.arange(0, B)
        tl.store(p + o, tl.load(p + o, mask=o < n), mask=o < n)

    x = torch.randn(64, 64, device=dev)
    rows = {}
    q = FakeQuantize(4).to(dev).train()
    q(x)
    rows["FakeQuantize call, training"] = per_call_us(lambda: q(x), args.calls)
    q.eval()
    rows["FakeQuantize call, evaluation"] = per_call_us(lambda: q(x), args.calls)
    rows["torch.add"] = per_call_us(lambda: x.add(1), args.calls)
    rows["torch.aminmax"] = per_call_us(lambda: torch.aminmax(x), args.calls)
    if dev.type == "cuda":
        rows["empty Triton kernel launch"] = per_call_us(lambda: empty_kernel[(1,)](x, 16, B=16), args.calls)
    graph = Graph.from_edges(list(range(99)), list(range(1, 100))).to(dev)
    feats = torch.randn(100, 64, device=dev)
    model = NodeClassifier("gcn", 64, 64, 8, num_layers=3, dropout=0.0).to(dev)
    build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4)).attach(model, example=(graph, feats))
    model.train()

    def train_step():
        model.zero_grad(set_to_none=True)
        model(graph, feats).sum().backward()

    rows["GCN 3 layers W4A4, train forward + backward"] = per_call_us(train_step, max(1, args.calls // 6))
    model.eval()
    with torch.no_grad():
        rows["GCN 3 layers W4A4, evaluation forward"] = per_call_us(lambda: model(graph, feats), max(1, args.calls // 3))
    report = {"qgnn": _tree_name(Path(qgnn.__file__).parent.parent), "device": torch.cuda.get_device_name(dev)
              if dev.type == "cuda" else "cpu", "torch": torch.__version__, "triton": triton.__version__,
              "us_per_call": rows}
    for name, us in rows.items():
        print(f"{name:46s} {us:9.1f} us")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
