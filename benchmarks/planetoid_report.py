"""Markdown tables of the quantized Planetoid grids from sweep summaries (``sweep.py --table``).

    python benchmarks/planetoid_report.py > docs/planetoid_quantized.md   # DEFAULT_FOLDERS
    python benchmarks/planetoid_report.py FOLDER [FOLDER ...]            # these, in order

Reads the float32 summary ``docs/planetoid_fp32.json`` and, from the folder given, the
summaries ``qat_planetoid_w8a8.json``, ``qat_planetoid_w4a4.json``,
``prompts_planetoid_w4a4_{gpfplus,lorap,gpf_lorap}.json``, ``prompts_planetoid_w2a2_gcn.json``
and ``lorap_sensitivity.json`` (those present). Numbers are test accuracy (%) at the best
validation epoch, mean ± sample std over seeds. Later folders override earlier ones row by
row (a rerun of some cells, e.g. A2Q after a config change, replaces those rows only). "Gap closed" is
``(prompted - no prompt) / (float32 - no prompt)``; it is left out where the quantized model
is within 2 points of float32 (too small a gap for a ratio). A ``NOTES.md`` in the folder is
printed under the title.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("qat", "dq", "a2q", "mixq")
CELLS = [(ds, arch) for ds in ("cora", "citeseer") for arch in ("gcn", "gin", "gat")]
# The folders behind docs/planetoid_quantized.md, oldest first (later reruns replace rows).
DEFAULT_FOLDERS = (
    "benchmarks/results/planetoid_h200x2",
    "benchmarks/results/planetoid_a2q_qlr0.1",
    "benchmarks/results/planetoid_mixq",
    "benchmarks/results/planetoid_gin_node_lr",
    "benchmarks/results/planetoid_a2q_gin_per_node",
)


def load(path) -> dict:
    """``{label: summary row}`` of one summary file, or merged over a :class:`Folders` path."""
    if isinstance(path, Folders):
        return load_merged(path)
    return {r["label"]: r for r in json.loads(path.read_text())} if path.is_file() else {}


def cell(row: dict | None) -> str:
    return "—" if row is None else f"{row['test_mean']:.1f} ± {row['test_std']:.1f}"


def gap_closed(fp32: float, base: dict | None, prompted: dict | None) -> str:
    if base is None or prompted is None or fp32 - base["test_mean"] < 2.0:
        return "—"
    return f"{100 * (prompted['test_mean'] - base['test_mean']) / (fp32 - base['test_mean']):+.0f}%"


class Folders:
    """Sweep summaries from several folders; a later folder's row replaces an earlier one."""

    def __init__(self, folders: list[str]):
        self.paths = [Path(f) for f in folders]

    def __truediv__(self, name: str) -> "Folders":
        merged = Folders([])
        merged.paths = [p / name for p in self.paths]
        return merged


def load_merged(files: Folders) -> dict:
    rows: dict = {}
    for path in files.paths:
        rows.update(load(path))
    return rows


def main(folders: list[str]) -> None:
    if isinstance(folders, (str, Path)):
        folders = [folders]
    d = Folders(folders)
    fp32 = {r["label"].removesuffix("_fp32"): r for r in json.loads((REPO / "docs/planetoid_fp32.json").read_text())}
    w8, w4 = load(d / "qat_planetoid_w8a8.json"), load(d / "qat_planetoid_w4a4.json")
    out = []
    for notes in (d / "NOTES.md").paths:
        if notes.is_file():
            out += [notes.read_text().strip(), ""]
    out += ["## Quantized accuracy: W8A8 and W4A4 (test %, 10 seeds)", "",
           "Float32: 10 seeds on CPU. Quantized: 10 seeds on GPU. `Δ` is the W8A8 mean minus float32;",
           "✓ marks W8A8 within 1.5 points of float32. Bits: average stored bits (weights and",
           "features; A2Q's full-precision sites count at 32, so its average can exceed the nominal width).", "",
           "| dataset | arch | method | float32 | W8A8 | Δ | bits | W4A4 | bits | W4A4 vs QAT |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for ds, arch in CELLS:
        f = fp32[f"{ds}_{arch}"]["test_mean"]
        qat4 = w4.get(f"{ds}_{arch}_qat")
        for m in METHODS:
            a, b = w8.get(f"{ds}_{arch}_{m}"), w4.get(f"{ds}_{arch}_{m}")
            delta = "—" if a is None else f"{a['test_mean'] - f:+.1f}{' ✓' if a['test_mean'] >= f - 1.5 else ''}"
            vs = "" if m == "qat" or b is None or qat4 is None else f"{b['test_mean'] - qat4['test_mean']:+.1f}"
            out.append(f"| {ds} | {arch} | {m} | {f:.1f} | {cell(a)} | {delta} | "
                       f"{'' if a is None else format(a['avg_bits'], '.2f')} | {cell(b)} | "
                       f"{'' if b is None else format(b['avg_bits'], '.2f')} | {vs} |")
    prompts = {k: load(d / f"prompts_planetoid_w4a4_{k}.json") for k in ("gpfplus", "lorap", "gpf_lorap")}
    if any(prompts.values()):
        seeds = sorted({r["seeds"] for p in prompts.values() for r in p.values()})
        out += ["", f"## Prompt recovery at W4A4 (test %, prompts {'/'.join(map(str, seeds))} seeds, no prompt 10 seeds)", "",
                "| dataset | arch | method | float32 | no prompt | GPF-plus | LoRAP | GPF-LoRAP | gap closed: GPF-plus / LoRAP / GPF-LoRAP |",
                "|---|---|---|---|---|---|---|---|---|"]
        for ds, arch in CELLS:
            f = fp32[f"{ds}_{arch}"]["test_mean"]
            for m in METHODS:
                key = f"{ds}_{arch}_{m}"
                base = w4.get(key)
                rows = [prompts[k].get(key) for k in ("gpfplus", "lorap", "gpf_lorap")]
                closed = " / ".join(gap_closed(f, base, r) for r in rows)
                out.append(f"| {ds} | {arch} | {m} | {f:.1f} | {cell(base)} | "
                           + " | ".join(cell(r) for r in rows) + f" | {closed} |")
    w2 = load(d / "prompts_planetoid_w2a2_gcn.json")
    if w2:
        seeds = "/".join(map(str, sorted({r["seeds"] for r in w2.values()})))
        out += ["", f"## GCN at W2A2 with prompts (test %, {seeds} seeds)", "",
                "| dataset | method | float32 | no prompt | GPF-plus | LoRAP | GPF-LoRAP | bits (no prompt) |",
                "|---|---|---|---|---|---|---|---|"]
        for ds in ("cora", "citeseer"):
            f = fp32[f"{ds}_gcn"]["test_mean"]
            for m in METHODS:
                rows = [w2.get(f"{ds}_gcn_{m}_w2a2_{p}") for p in ("none", "gpfplus", "lorap", "gpf_lorap")]
                bits = "" if rows[0] is None else f"{rows[0]['avg_bits']:.2f}"
                out.append(f"| {ds} | {m} | {f:.1f} | " + " | ".join(cell(r) for r in rows) + f" | {bits} |")
    sens = load(d / "lorap_sensitivity.json")
    if sens:
        ks, rs = (5, 10, 20, 40, 80), (1, 2, 4, 8)
        prompt = next(iter(sens.values())).get("prompt", "")
        out += ["", f"## LoRAP k × r (Cora GCN, vanilla QAT W4A4, prompt {prompt}; test %, seeds per cell in brackets)", "",
                "| k \\ r | " + " | ".join(map(str, rs)) + " |", "|---|" + "---|" * len(rs)]
        for k in ks:
            cells = []
            for r in rs:
                row = sens.get(f"k{k}_r{r}")
                cells.append("not run" if row is None else f"{cell(row)} ({row['seeds']})")
            out.append(f"| {k} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:] or [str(REPO / f) for f in DEFAULT_FOLDERS])
