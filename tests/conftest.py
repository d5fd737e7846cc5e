"""Shared fixtures.

Tests that need real datasets take the ``data_root`` fixture: the folder named by
``QGNN_DATA`` (or ``data/``). When a dataset is absent the test is skipped with a reason,
unless ``QGNN_REQUIRE_DATA=1`` (set by CI), which turns that skip into a failure so that
CI always exercises the real files.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")
# The suite runs Triton kernels only through the CPU interpreter (tests/kernels). Triton
# decorates its own language helpers (tl.zeros, ...) when it is first imported, so the
# variable must be set before anything in this process imports triton: in a fresh CI
# environment every interpreted kernel failed ("Cannot call @triton.jit'd outside of the
# scope of a kernel", from tl.zeros) once a test module imported triton at collection.
os.environ["TRITON_INTERPRET"] = "1"

from qgnn.data.base import resolve_data_root  # noqa: E402


def _require_data() -> bool:
    return os.environ.get("QGNN_REQUIRE_DATA", "0") == "1"


@pytest.fixture(scope="session")
def data_root() -> Path:
    return resolve_data_root()


def need_files(root: Path, *relative: str) -> None:
    """Skip (or fail under ``QGNN_REQUIRE_DATA=1``) unless every file exists under ``root``."""
    missing = [r for r in relative if not (root / r).exists()]
    if missing:
        message = f"dataset files missing under {root}: {', '.join(missing)}"
        if _require_data():
            pytest.fail(message + " (QGNN_REQUIRE_DATA=1 makes this a failure)")
        pytest.skip(message)


@pytest.fixture
def require_files(data_root):
    """``require_files("Cora/raw/ind.cora.x", ...)`` -> the data root, or skip/fail."""

    def check(*relative: str) -> Path:
        need_files(data_root, *relative)
        return data_root

    return check
