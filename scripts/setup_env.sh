#!/usr/bin/env bash
# Create (or reuse) .venv and install qgnn with its test and dataset extras.
# torch 2.13.0 is installed first when no torch is importable, so that pip does not pull a
# multi-GB CUDA build to satisfy qgnn's plain "torch" requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -c "import torch, qgnn; print(f'qgnn {qgnn.__version__} with torch {torch.__version__} in .venv')"
