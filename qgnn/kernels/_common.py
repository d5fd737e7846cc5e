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
    """An output buffer; NaN-filled when ``QGNN_KERNEL_POISON=1`` so tests see unwritten elements."""
    dtype = dtype or like.dtype
    if os.environ.get("QGNN_KERNEL_POISON", "0") == "1":
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


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
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y"):
        return "tf32x3"  # the values triton itself reads as "interpret"
    return EXACT_DOT_PRECISION


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a small constant for the CPU interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def resident_programs(compiled, device: torch.device):
    """How many programs of a launched Triton kernel the whole GPU holds at once, from its
    registers, shared memory and warps against each multiprocessor's limits (the occupancy
    calculator's rule); ``None`` when unknown (the interpreter, or a field missing)."""
    n_regs = getattr(compiled, "n_regs", None)
    metadata = getattr(compiled, "metadata", None)
    shared = getattr(metadata, "shared", None)
    num_warps = getattr(metadata, "num_warps", None)
    if device.type != "cuda" or not n_regs or shared is None or not num_warps:
        return None
    props = torch.cuda.get_device_properties(device)
    regs_sm = getattr(props, "regs_per_multiprocessor", None)
    smem_sm = getattr(props, "shared_memory_per_multiprocessor", None)
    threads_sm = getattr(props, "max_threads_per_multi_processor", None)
    if not (regs_sm and smem_sm and threads_sm):
        return None
    regs_per_warp = _cdiv(n_regs * 32, 256) * 256  # allocated in units of 256 a warp
    by_regs = regs_sm // (regs_per_warp * num_warps)
    by_smem = smem_sm // (shared + 1024) if shared else by_regs  # 1 KB reserved a block
    by_threads = threads_sm // (32 * num_warps)
    per_sm = min(by_regs, by_smem, by_threads, 32)
    return props.multi_processor_count * per_sm if per_sm > 0 else None


def balanced_rows(n: int, block_m: int, resident) -> int:
    """Rows a program handles (at most ``block_m``) so that the grid's last wave is nearly full.

    With ``resident`` programs running at once, ``ceil(n / block_m)`` whole tiles take
    ``waves = ceil(tiles / resident)`` waves; spreading the ``n`` rows evenly over
    ``waves * resident`` programs keeps that number of waves with shorter programs. At
    N=169,343 with 64-row tiles and 264 resident programs (one H100) that is 2,646 tiles, 10.02
    waves, so the 11th wave would run 6 programs while the GPU idles; 59 rows a program make
    all 11 waves full. ``resident`` ``None``: ``block_m``.
    """
    if not resident or n <= 0:
        return block_m
    waves = _cdiv(_cdiv(n, block_m), resident)
    return min(block_m, _cdiv(n, waves * resident))


# Size row-tiled grids to whole waves (see balanced_rows); False: whole BLOCK_M tiles.
BALANCE_WAVES = True
# Residency of each launched kernel configuration (see :func:`launch_balanced`).
_RESIDENT: dict = {}


def launch_balanced(key, n: int, block_m: int, device: torch.device, launch, rows=None):
    """Run ``launch(rows)``, which starts ``ceil(n / rows)`` programs of ``rows`` rows each
    (``BLOCK_M`` tiles, the rest masked) and returns the compiled kernel. ``rows`` is
    :func:`balanced_rows` for the residency recorded under ``key`` (every constexpr and launch
    option of the kernel), or ``block_m`` on a key's first launch, which records it. An
    explicit ``rows`` wins. The rows a program handles change no row's result; sums over
    per-program partials (the LoRAP backward's parameter gradients) follow its grouping, so
    they may differ in the last bits between a configuration's first launch and later ones
    (the same in every run). Returns ``rows``."""
    if rows is None:
        rows = balanced_rows(n, block_m, _RESIDENT.get(key)) if BALANCE_WAVES else block_m
    compiled = launch(rows)
    if key not in _RESIDENT:
        resident = resident_programs(compiled, device)
        if resident is not None:
            _RESIDENT[key] = resident
    return rows
