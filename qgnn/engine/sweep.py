"""Run configs over several seeds and summarise them as a table (mean ± std).

A sweep file (``configs/sweeps/*.yaml``)::

    name: planetoid_fp32
    seeds: 10                 # or a list: [0, 1, 2]
    set: [train.epochs=200]   # overrides for every run (optional)
    configs:
      - configs/cora_gcn_fp32.yaml
      - {config: configs/cora_gat_fp32.yaml, set: [train.lr=0.005]}

Runs go to ``jobs`` worker processes (several runs share one GPU or the CPU cores); each
worker imports torch once and trains its runs in-process, one after another. A run whose
``metrics.json`` already exists is not repeated, so an interrupted sweep resumes where it
stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import multiprocessing
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from tqdm.auto import tqdm

from qgnn.engine.config import load_config
from qgnn.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    label: str
    config: str
    overrides: list
    seed: int
    out: Path


@dataclass
class Sweep:
    name: str
    seeds: list
    entries: list = field(default_factory=list)  # (label, config path, overrides)


def load_sweep(path: str, extra_overrides: Optional[list] = None,
               match: Optional[str] = None) -> Sweep:
    """Read a sweep file; ``match`` keeps only the entries whose label contains it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file {path} does not exist; sweeps live in configs/sweeps/.")
    spec = yaml.safe_load(p.read_text()) or {}
    unknown = set(spec) - {"name", "seeds", "set", "configs"}
    if unknown:
        raise ConfigError(f"unknown sweep key '{sorted(unknown)[0]}'; allowed: name, seeds, set, configs.")
    seeds = spec.get("seeds", 10)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    common = list(spec.get("set", [])) + list(extra_overrides or [])
    sweep = Sweep(spec.get("name", p.stem), seeds)
    for entry in spec.get("configs", []):
        if isinstance(entry, str):
            entry = {"config": entry}
        config = entry["config"]
        overrides = common + list(entry.get("set", []))
        cfg = load_config(str(REPO / config) if not Path(config).is_absolute() else config, overrides)
        sweep.entries.append((entry.get("label", cfg.name), str(REPO / config), overrides))
    if match is not None:
        sweep.entries = [e for e in sweep.entries if match in e[0]]
        if not sweep.entries:
            raise ConfigError(f"no entry of sweep {sweep.name} has a label containing '{match}'.")
    return sweep


def finished_runs(sweep: Sweep, out_dir) -> list:
    """Metrics of the runs of ``sweep`` already finished under ``out_dir`` (runs nothing)."""
    out_dir = Path(out_dir)
    done = []
    for label, _, _ in sweep.entries:
        for seed in sweep.seeds:
            out = out_dir / label / f"seed_{seed}"
            if _done(out):
                done.append(dict(json.loads((out / "metrics.json").read_text()), label=label))
    return done


def run_sweep(sweep: Sweep, out_dir, jobs: int = 1, device: str = "cpu",
              data_root: Optional[str] = None) -> list:
    """Run every (config, seed) not yet done; return the list of metrics dicts."""
    out_dir = Path(out_dir)
    runs = [Run(label, config, overrides, seed, out_dir / label / f"seed_{seed}")
            for label, config, overrides in sweep.entries for seed in sweep.seeds]
    todo = [r for r in runs if not _done(r.out)]
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    failures = []
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    counter = context.Value("i", 0)
    with context.Pool(max(jobs, 1), initializer=_init_worker, initargs=(threads, device, counter)) as pool:
        work = [(r, device, data_root) for r in todo]
        for run, error in tqdm(pool.imap_unordered(_execute, work), total=len(todo), desc=sweep.name):
            if error:
                failures.append(f"{run.label} seed {run.seed}: {error}")
    if failures:
        raise RuntimeError("sweep runs failed:\n  " + "\n  ".join(failures))
    return [dict(json.loads((r.out / "metrics.json").read_text()), label=r.label) for r in runs]


def _init_worker(threads: int, device: str, counter) -> None:
    import torch

    torch.set_num_threads(threads)
    if device == "cuda" and torch.cuda.device_count() > 1:
        # Spread the workers over the GPUs: worker i uses GPU i mod count.
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        torch.cuda.set_device(index % torch.cuda.device_count())


def _execute(job) -> tuple:
    """Train one run in this worker; return ``(run, error message or None)``."""
    from qgnn.engine.trainer import fit

    run, device, data_root = job
    try:
        cfg = load_config(run.config, run.overrides + [f"train.seed={run.seed}"])
        fit(cfg, run.out, device=device, data_root=data_root, progress=False)
        return run, None
    except Exception as exc:  # reported with the others at the end of the sweep
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "error.txt").write_text(traceback.format_exc())
        return run, f"{type(exc).__name__}: {exc} (see {run.out / 'error.txt'})"


def _done(out: Path) -> bool:
    path = out / "metrics.json"
    if not path.is_file():
        return False
    try:
        return not json.loads(path.read_text()).get("interrupted", False)
    except json.JSONDecodeError:
        return False


def summarise(results: list) -> list:
    """Group by label: mean and sample std of the test and validation metrics."""
    rows = {}
    for r in results:
        rows.setdefault(r["label"], []).append(r)
    table = []
    for label, group in rows.items():
        test = [g["test_metric"] for g in group]
        val = [g["val_metric"] for g in group]
        secs = [g["seconds_per_epoch"] for g in group]
        first = group[0]
        row = {
            "label": label,
            "dataset": first["dataset"],
            "arch": first["arch"],
            "metric": first["metric"],
            "seeds": len(group),
            "test_mean": statistics.fmean(test),
            "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            "val_mean": statistics.fmean(val),
            "seconds_per_epoch": statistics.median(secs),
            "device": first["device"],
        }
        for key in ("method", "bits", "avg_bits", "compression", "prompt"):
            if key in first:
                row[key] = first[key]
        table.append(row)
    return table


RUN_COLUMNS = ("sweep", "label", "seed", "test", "val", "avg_bits", "seconds_per_epoch",
               "best_epoch", "device")


def runs_csv(sweep_name: str, results: list) -> str:
    """The per-run numbers behind :func:`summarise`'s table, one CSV line per (label, seed)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    for r in sorted(results, key=lambda r: (r["label"], r["seed"])):
        writer.writerow([sweep_name, r["label"], f"seed_{r['seed']}", round(r["test_metric"], 2),
                         round(r["val_metric"], 2), round(r.get("avg_bits") or 0.0, 4),
                         round(r["seconds_per_epoch"], 4), r["best_epoch"], r["device"]])
    return buf.getvalue()


def markdown(table: list) -> str:
    extra = [k for k in ("method", "bits", "prompt", "avg_bits", "compression") if any(k in r for r in table)]
    head = ["config", "dataset", "arch", *extra, "test (mean ± std)", "val (mean)", "seeds", "s/epoch", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["label"], r["dataset"], r["arch"], *[_fmt(r.get(k, "")) for k in extra],
                 f"{r['test_mean']:.2f} ± {r['test_std']:.2f}", f"{r['val_mean']:.2f}", str(r["seeds"]),
                 f"{r['seconds_per_epoch']:.4f}", r["device"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    import argparse

    from qgnn.engine.cli import _run

    parser = argparse.ArgumentParser(description="Run a sweep of configs x seeds and print a table.")
    parser.add_argument("--sweep", required=True, help="a sweep file, e.g. configs/sweeps/planetoid_fp32.yaml")
    parser.add_argument("--out", help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data-root")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--match", metavar="TEXT",
                        help="run (or report) only the entries whose label contains TEXT, e.g. _a2q")
    parser.add_argument("--table", help="also write the markdown table and JSON summary here (.md)")
    parser.add_argument("--runs-csv", metavar="FILE",
                        help="also write one CSV line per run (label, seed, test, val, bits, ...)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: tabulate the runs already finished under --out")
    args = parser.parse_args(argv)

    def go(_):
        sweep = load_sweep(args.sweep, args.overrides, args.match)
        out = args.out or f"runs/sweeps/{sweep.name}"
        if args.report_only:
            results = finished_runs(sweep, out)
            if not results:
                raise ConfigError(f"no finished runs of sweep {sweep.name} under {out}.")
        else:
            results = run_sweep(sweep, out, args.jobs, args.device, args.data_root)
        table = summarise(results)
        text = markdown(table)
        print(text)
        if args.table:
            Path(args.table).parent.mkdir(parents=True, exist_ok=True)
            Path(args.table).write_text(text)
            Path(args.table).with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
        if args.runs_csv:
            Path(args.runs_csv).parent.mkdir(parents=True, exist_ok=True)
            Path(args.runs_csv).write_text(runs_csv(sweep.name, results))
        return 0

    return _run(go, argv)
