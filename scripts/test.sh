#!/usr/bin/env bash
# Set everything up, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export DGLBACKEND=pytorch
exec .venv/bin/python -m pytest -q "$@"
