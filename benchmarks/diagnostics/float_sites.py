"""Train a quantized config with chosen quantization sites left in float; print the test accuracy.

    python benchmarks/diagnostics/float_sites.py --config configs/cora_gin_qat.yaml \
        --seeds 0-9 --float-sites output,hidden --set quant.weight_bits=8 --set quant.act_bits=8

A site named in ``--float-sites`` (``input``, ``aggregate``, ``hidden``, ``output``,
``weight1``, ...; see each layer's ``QUANT_SITES``) gets no quantizer in any layer, so its
tensor stays float32 and counts at 32 bits in the size report. ``--ranges`` also prints,
for the last seed's trained model, each affine (min/max) activation quantizer's range and step
against the median non-zero |x| it sees on the full graph. Used for the W8A8 GIN diagnosis in
docs/results.md (10 seeds per line, one H200, 16 processes at once).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from torch import nn  # noqa: E402

import torch  # noqa: E402

import qgnn.engine.trainer as trainer  # noqa: E402
from qgnn.engine.config import load_config  # noqa: E402
from qgnn.quant.framework import QuantFramework  # noqa: E402
from qgnn.quant.quantizers import FakeQuantize  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def keep_in_float(sites: set) -> None:
    """Make every framework return ``nn.Identity`` for the named sites."""
    classes, todo = [], [QuantFramework]
    while todo:  # every framework class, however deep
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        if "make_quantizer" not in cls.__dict__:
            continue
        original = cls.__dict__["make_quantizer"]

        def make_quantizer(self, layer, site, kind, _original=original):
            return nn.Identity() if site in sites else _original(self, layer, site, kind)

        cls.make_quantizer = make_quantizer


def print_ranges(task, model) -> None:
    """Range, step and median non-zero |x| of every affine activation quantizer (eval pass)."""
    rows = {}

    def hook(module, inputs, output, name):
        x = inputs[0].detach().flatten()
        obs = module.observer
        step = float((obs.max_val - obs.min_val) / (2 ** module.bits - 1))
        nonzero = x[x != 0].abs()
        median = float(nonzero.median()) if nonzero.numel() else 0.0
        below = float((nonzero < step).float().mean()) if nonzero.numel() else 0.0
        rows[name] = (float(obs.min_val), float(obs.max_val), step, median, below)

    handles = [m.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n))
               for name, m in model.named_modules()
               if isinstance(m, FakeQuantize) and not m.symmetric and m.observer.ready]
    model.eval()
    with torch.no_grad():
        task.evaluate(model)
    for h in handles:
        h.remove()
    for name, (lo, hi, step, median, below) in rows.items():
        print(f"  {name:28s} range [{lo:.3g}, {hi:.3g}] step {step:.3g} median |x| {median:.3g} "
              f"= {median / step if step else 0:.1f} steps; non-zeros below one step {100 * below:.0f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", default="0", help="e.g. 0-9 or 0,3,5")
    ap.add_argument("--float-sites", default="", help="comma-separated site names kept in float")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--data-root")
    ap.add_argument("--ranges", action="store_true", help="print the activation ranges after training")
    args = ap.parse_args(argv)
    built = {}
    build = trainer.build

    def keep_built(*a, **k):
        built["task"], built["model"], _ = out = build(*a, **k)
        return out

    trainer.build = keep_built
    sites = {s for s in args.float_sites.split(",") if s}
    keep_in_float(sites)
    results = []
    for seed in parse_seeds(args.seeds):
        cfg = load_config(args.config, args.overrides + [f"train.seed={seed}"])
        with tempfile.TemporaryDirectory() as out:
            metrics = trainer.fit(cfg, out, device=args.device, data_root=args.data_root,
                                  progress=False)
        results.append(metrics["test_metric"])
    spread = statistics.stdev(results) if len(results) > 1 else 0.0
    print(f"{Path(args.config).stem} float sites {sorted(sites) or 'none'} {args.overrides}: "
          f"test {statistics.mean(results):.2f} +- {spread:.2f} {[round(r, 1) for r in results]}")
    if args.ranges:
        print_ranges(built["task"], built["model"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
