"""Run the Triton kernels on the CPU through triton's interpreter.

``TRITON_INTERPRET`` must be set before the kernels are decorated; qgnn imports its kernel
module lazily (on the first Triton call), so setting it here, at collection, is early enough.
"""

import importlib.util
import os
import sys

import pytest

os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def force_triton(monkeypatch):
    """Dispatch to Triton on CPU tensors, with NaN-poisoned output buffers."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("QGNN_FORCE_TRITON", "1")
    monkeypatch.setenv("QGNN_KERNEL_POISON", "1")
    mod = sys.modules.get("qgnn.kernels._triton_kernels")
    if mod is not None and type(mod.lorap_fwd_kernel).__name__ != "InterpretedFunction":
        pytest.skip("the Triton kernels were compiled before TRITON_INTERPRET=1 was set")
