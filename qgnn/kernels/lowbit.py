"""Low-bit node features: integer codes packed 8, 4 or 2 bits a value, for the aggregation.

A quantizer's output ``x_q = (c - z) * scale`` (``c`` integer in ``[qmin, qmax]``) holds no more
information than its codes ``c``; storing them in ``b`` bits instead of float32 cuts what the
aggregation gathers per edge by ``32 / b`` (DESIGN §5, low-bit storage). The CSR aggregation
kernel reads :class:`PackedRows` directly and dequantizes each gathered row on chip.

Layout: ``data`` ``(N, ceil(d * b / 8))`` uint8; column ``j`` of row ``i`` sits in byte
``j // (8 / b)`` at bit ``(j % (8 / b)) * b``, stored unsigned as ``u = c - qmin`` in
``[0, 2^b)``. A row is dequantized as ``(u - offset) * scale`` with ``offset = z - qmin``.
``scale`` / ``offset`` are one number (``per_tensor``), one per row (``per_row``, e.g. one per
node) or one per column (``per_column``, one per feature channel), float32.

:func:`pack_rows` runs a Triton kernel on CUDA (or under ``QGNN_FORCE_TRITON=1``) and
:func:`pack_rows_reference` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qgnn.kernels._common import use_triton
from qgnn.kernels._launch import launch_kernel

Tensor = torch.Tensor

STORAGE_BITS = (2, 4, 8)
GRANULARITIES = ("per_tensor", "per_row", "per_column")


@dataclass(frozen=True)
class CodeGrid:
    """The integer grid a quantizer's output lies on: ``x_q = (c - zero_point) * scale`` with
    ``c`` an integer in ``[qmin, qmax]``.

    ``scale`` and ``zero_point`` are float tensors of shape ``()`` (``per_tensor``), ``(N,)``
    (``per_row``) or ``(d,)`` (``per_column``); any broadcastable shape is flattened.
    """

    scale: Tensor
    zero_point: Tensor
    qmin: int
    qmax: int
    granularity: str = "per_tensor"

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}.")
        if self.qmax <= self.qmin:
            raise ValueError(f"qmax ({self.qmax}) must exceed qmin ({self.qmin}).")

    @property
    def storage_bits(self) -> int:
        """Bits a code takes in storage: the smallest of 2, 4, 8 that holds every level
        (``0`` when more than 256 levels: no low-bit storage)."""
        need = max(1, math.ceil(math.log2(self.qmax - self.qmin + 1)))
        return next((b for b in STORAGE_BITS if b >= need), 0)


@dataclass
class PackedRows:
    """``(N, dim)`` features stored as packed ``bits``-bit codes (see the module docstring)."""

    data: Tensor
    dim: int
    bits: int
    scale: Tensor
    offset: Tensor
    granularity: str

    @property
    def num_rows(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return self.data.numel() + (self.scale.numel() + self.offset.numel()) * 4

    def codes(self) -> Tensor:
        """Stored codes ``u = c - qmin`` ``(N, dim)`` int32."""
        per_byte = 8 // self.bits
        shifts = torch.arange(per_byte, device=self.data.device, dtype=torch.int32) * self.bits
        u = (self.data.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << self.bits) - 1)
        return u.reshape(self.num_rows, -1)[:, : self.dim]

    def dequantize(self) -> Tensor:
        """``(N, dim)`` float32: ``(u - offset) * scale``."""
        scale, offset = self.scale, self.offset
        if self.granularity == "per_row":
            scale, offset = scale[:, None], offset[:, None]
        return (self.codes().to(torch.float32) - offset) * scale


def row_bytes(dim: int, bits: int) -> int:
    """Bytes of one packed row of ``dim`` codes of ``bits`` bits."""
    return -(-dim * bits // 8)


def _grid_tensors(x: Tensor, grid: CodeGrid) -> tuple[Tensor, Tensor]:
    """``(scale, offset)`` flat float32 of the grid's granularity, checked against ``x``."""
    n, d = x.shape
    want = {"per_tensor": 1, "per_row": n, "per_column": d}[grid.granularity]
    f32 = torch.float32

    def flat(t):  # () or (G,) as they come (the kernels index them flat): no view op per call
        t = torch.as_tensor(t, dtype=f32, device=x.device)
        return t.reshape(-1).contiguous() if t.dim() > 1 or not t.is_contiguous() else t

    scale, zero = flat(grid.scale), flat(grid.zero_point)
    if scale.numel() != want or zero.numel() != want:
        raise ValueError(f"a {grid.granularity} grid for a ({n}, {d}) tensor needs {want} scale(s) "
                         f"and zero point(s), got {scale.numel()} and {zero.numel()}.")
    return scale, zero - grid.qmin


def _check_pack(x: Tensor, grid: CodeGrid) -> int:
    if x.dim() != 2:
        raise ValueError(f"x must be (N, d), got shape {tuple(x.shape)}.")
    bits = grid.storage_bits
    if bits == 0:
        raise ValueError(f"a grid of {grid.qmax - grid.qmin + 1} levels does not fit 8-bit storage.")
    return bits


def pack_rows_reference(x: Tensor, grid: CodeGrid) -> PackedRows:
    """Torch reference of :func:`pack_rows`: codes ``clamp(round(x / scale) + z, qmin, qmax)``."""
    bits = _check_pack(x, grid)
    scale, offset = _grid_tensors(x, grid)
    s, o = (scale[:, None], offset[:, None]) if grid.granularity == "per_row" else (scale, offset)
    zero = o + grid.qmin
    codes = torch.clamp(torch.round(x.float() / s) + zero, grid.qmin, grid.qmax) - grid.qmin
    n, d = x.shape
    per_byte = 8 // bits
    width = row_bytes(d, bits) * per_byte
    u = torch.zeros((n, width), dtype=torch.int32, device=x.device)
    u[:, :d] = codes.to(torch.int32)
    shifts = torch.arange(per_byte, device=x.device, dtype=torch.int32) * bits
    data = (u.reshape(n, -1, per_byte) << shifts).sum(-1).to(torch.uint8)
    return PackedRows(data, d, bits, scale, offset, grid.granularity)


def pack_rows(x: Tensor, grid: CodeGrid) -> PackedRows:
    """Pack ``x`` ``(N, d)``, a quantizer's output on ``grid``, as :class:`PackedRows`.

    Values off the grid are rounded to it (half away from zero on the Triton path, half to
    even in the reference; the two agree on every value that lies on the grid).
    """
    bits = _check_pack(x, grid)
    if not use_triton(x):
        return pack_rows_reference(x, grid)
    from qgnn.kernels import _triton_kernels as tk

    x = x.contiguous()
    n, d = x.shape
    scale, offset = _grid_tensors(x, grid)
    nbytes = row_bytes(d, bits)
    data = torch.empty((n, nbytes), dtype=torch.uint8, device=x.device)
    per_byte = 8 // bits
    cols = min(128, max(16, 1 << (d - 1).bit_length()))  # x columns per program
    block_m, block_b = 32, cols // per_byte
    grid_dims = (-(-n // block_m), -(-nbytes // block_b))
    launch_kernel(
        tk.pack_rows_kernel, grid_dims,
        x, scale, offset, data, n, d, nbytes, float(grid.qmax - grid.qmin),
        BITS=bits, QMODE=GRANULARITIES.index(grid.granularity), BLOCK_M=block_m, BLOCK_B=block_b,
        num_warps=4,
    )
    return PackedRows(data, d, bits, scale, offset, grid.granularity)
