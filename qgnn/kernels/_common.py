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
    if os.environ.get("QGNN_FORCE_TRITON", "0") == "1":
        return True
    return all(t.is_cuda for t in tensors if t is not None)


def alloc(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An output buffer; NaN-filled when ``QGNN_KERNEL_POISON=1`` so tests see unwritten elements."""
    dtype = dtype or like.dtype
    if os.environ.get("QGNN_KERNEL_POISON", "0") == "1":
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def dot_precision() -> str:
    """Triton ``tl.dot`` input precision matching torch's float32 matmul setting.

    ``torch.backends.cuda.matmul.allow_tf32`` on gives plain tf32 tensor-core products, as
    cuBLAS would. Off (torch's default) gives "tf32x3": three tf32 products that recover
    float32 accuracy (relative error ~1e-7 on one H100) while staying on the tensor cores;
    "ieee" would run the scores on the CUDA cores, which measured 7x slower than the
    copy-bandwidth floor at N=169,343, d=256.
    """
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a small constant for the CPU interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
