"""Command line: ``python -m qgnn.data stats NAME [--data-root D] [--json]`` and ``list``.

``stats`` reads the dataset through the registry (so it also checks that the raw files
are complete and well formed) and prints its statistics; user mistakes (unknown name,
missing or malformed files) print the error's message and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from qgnn.data import dataset_names, load_dataset
from qgnn.errors import QgnnError


def _format(stats: dict) -> str:
    width = max(len(k) for k in stats)
    lines = []
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgnn.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="print a dataset's statistics")
    stats.add_argument("name", help="dataset name, e.g. reddit_binary, zinc, ogbn_arxiv")
    stats.add_argument("--data-root", default=None, help="data root (default: $QGNN_DATA or data/)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--no-download", action="store_true", help="never fetch missing files")
    sub.add_parser("list", help="list the registered dataset names")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(dataset_names()))
        return 0
    try:
        options = {"download": False} if args.no_download else {}
        dataset = load_dataset(args.name, args.data_root, **options)
    except QgnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = dataset.statistics()
    print(json.dumps(result) if args.json else _format(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
