"""Run configs x seeds: ``python sweep.py --sweep configs/sweeps/planetoid_fp32.yaml --jobs 2``."""

import sys

from qgnn.engine.sweep import main

if __name__ == "__main__":
    sys.exit(main())
