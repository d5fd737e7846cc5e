"""Dispatch and buffer helpers shared by the kernel modules (torch only, no triton import)."""

from __future__ import annotations

import importlib.util
import os

import torch

_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return _TRITON_AVAILABLE


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the Triton path should run for these inputs.

    Triton runs when every tensor is on CUDA, or when ``QGNN_FORCE_TRITON=1`` (the CPU tests
    set it together with ``TRITON_INTERPRET=1``). Without triton the reference always runs.
    """
    if not _TRITON_AVAILABLE:
        return False
    if all(t.is_cuda for t in tensors if t is not None):
        return True
    return os.environ.get("QGNN_FORCE_TRITON", "0") == "1"  # read only off CUDA: ~2 us a call


def alloc(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An output buffer; NaN-filled (integers: their largest value) when
    ``QGNN_KERNEL_POISON=1`` so tests see unwritten elements."""
    dtype = dtype or like.dtype
    if os.environ.get("QGNN_KERNEL_POISON", "0") == "1":
        fill = float("nan") if dtype.is_floating_point else torch.iinfo(dtype).max
        return torch.full(shape, fill, dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` -> ``(C,)``: the sum of the rows, in ``x``'s dtype (float32 accumulation).

    On CUDA a float32 ``x`` is summed as the matrix-vector product ``x^T 1`` (cuBLAS; no
    tensor cores, deterministic), which reads ``x`` at close to copy speed, where torch's
    reduction over the first dimension does not: one H100, ``(169343, 256)``, 61-64 against
    148-149 us; ``(169343, 40)`` 11.6 against 20.7 us, errors against float64 4e-7 and 3e-7
    (benchmarks/experiments/row_reductions.py). A layer bias's gradient is such a sum."""
    if x.is_cuda and x.dtype == torch.float32 and x.dim() == 2 and x.shape[0] and x.shape[1]:
        return torch.mv(x.t(), x.new_ones(x.shape[0]))
    return x.sum(0, dtype=torch.float32).to(x.dtype) if x.dim() == 2 else x.sum(0)


# ``tl.dot`` input precision when torch keeps float32 matmuls off tf32 (its default).
# "bf16x3" splits each float32 operand into two bf16 terms and sums three bf16 products on the
# tensor cores (bf16 runs at twice tf32's rate). Streamed LoRAP on one H100 (N=169,343, d=256,
# k=40, r=2; forward with alpha / backward, us), relative error against float64 of alpha /
# out / the worst gradient:
#   "bf16x3"  171.5 / 434   4.1e-6 / 3.2e-7 / 5.8e-6
#   "tf32x3"  184.9 / 472   2.2e-7 / 4.0e-8 / 7.3e-7
#   "bf16x6"  199.0 / -     1.3e-7 / 3.8e-8 / 7.1e-7
#   "tf32"    157.0 / -     7.9e-4 / 6.3e-5 / 1.0e-3   (what tf32 on gives)
#   "ieee"    745.5 / -     (CUDA cores)
# bf16x3 stays within 1e-5 everywhere, about the rounding error of a float32 GEMM over 256
# terms; set "tf32x3" for float32's last bits.
EXACT_DOT_PRECISION = "bf16x3"


def dot_precision() -> str:
    """Triton ``tl.dot`` input precision matching torch's float32 matmul setting.

    ``torch.backends.cuda.matmul.allow_tf32`` on gives plain tf32 tensor-core products, as
    cuBLAS would. Off (torch's default) gives :data:`EXACT_DOT_PRECISION` (``"bf16x3"``):
    three bf16 products that keep the relative error near 1e-6 while staying on the tensor
    cores. Triton's CPU interpreter accepts only tf32 / tf32x3 / ieee (and computes in float32
    whatever it is told), so there the exact mode asks for "tf32x3".
    """
    if torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    if interpreting():
        return "tf32x3"
    return EXACT_DOT_PRECISION


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET`` set)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")


_PDL_DEVICES: dict = {}


def pdl_supported(device: torch.device) -> bool:
    """Whether kernels on ``device`` can be launched as programmatic dependents (CUDA compute
    capability 9.0 and later: Hopper on): a dependent's programs may then start while the
    kernel before it still runs. Never in Triton's CPU interpreter."""
    if device.type != "cuda" or interpreting():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _PDL_DEVICES:
        _PDL_DEVICES[index] = torch.cuda.get_device_capability(index)[0] >= 9
    return _PDL_DEVICES[index]


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a small constant for the CPU interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
