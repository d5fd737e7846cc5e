"""Fused kernels: LoRAP injection, CSR aggregation (with a LoRAP epilogue, or gathering
packed low-bit codes) and one-pass fake quantization.

Each public function runs a Triton kernel when its tensors are on CUDA (or when
``QGNN_FORCE_TRITON=1``) and a readable torch reference with the same signature otherwise;
triton is optional. See the docstrings of :mod:`qgnn.kernels.lorap`,
:mod:`qgnn.kernels.aggregate`, :mod:`qgnn.kernels.lowbit` and :mod:`qgnn.kernels.fake_quant`
for shapes.
"""

from qgnn.kernels._common import triton_available
from qgnn.kernels.aggregate import (
    CSRPlan,
    aggregate_graph,
    aggregate_graph_lorap,
    csr_aggregate,
    csr_aggregate_lorap,
    csr_aggregate_lorap_reference,
    csr_aggregate_reference,
    graph_plan,
)
from qgnn.kernels.lorap import lorap_inject, lorap_reference
from qgnn.kernels.lowbit import CodeGrid, PackedRows, pack_rows, pack_rows_reference

__all__ = [
    "lorap_inject",
    "lorap_reference",
    "csr_aggregate",
    "csr_aggregate_reference",
    "csr_aggregate_lorap",
    "csr_aggregate_lorap_reference",
    "aggregate_graph",
    "aggregate_graph_lorap",
    "CSRPlan",
    "graph_plan",
    "triton_available",
    "CodeGrid",
    "PackedRows",
    "pack_rows",
    "pack_rows_reference",
]
