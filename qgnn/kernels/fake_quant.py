"""Fake quantization with a fixed grid as one Triton pass (forward) and one (clipped backward).

Same maths and the same float32 results as :func:`qgnn.quant.functional.fake_quantize`
(division and round-half-to-even as torch does them), for a ``scale`` / ``zero_point`` that
need no gradient (observer ranges: vanilla QAT, Degree-Quant, MixQ's candidates) and fixed
integer bounds. Torch's eager version runs 6-8 elementwise kernels per call; at ogbn-arxiv
size each one is a full pass over the tensor.

Shapes: ``x`` ``(R, *C)`` float32; ``scale`` and ``zero_point`` one number (per tensor), one
per row (``(R, 1, ...)``) or one per column (``C`` values, broadcasting from the right).

:func:`fused_fake_quantize` takes the grid; :func:`fused_fake_quantize_from_range` forms it
on chip from an observer's min / max (what ``FakeQuantize`` uses). A :class:`RangeGrid`
hands such a range to another kernel that rounds its own input (LoRAP's).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch

from qgnn.kernels._common import column_sums, use_triton
from qgnn.kernels._launch import launch_kernel

Tensor = torch.Tensor
BLOCK = 1024


def grid_mode(x: Tensor, scale: Tensor) -> Optional[int]:
    """0 per-tensor, 1 per-row, 2 per-column, or ``None`` when ``scale`` broadcasts otherwise."""
    if x.dim() == 0:
        return None
    if scale.numel() == 1:
        return 0
    rows = x.shape[0]
    cols = x.numel() // rows if rows else 0
    if scale.dim() == x.dim() and scale.shape[0] == rows and scale.numel() == rows:
        return 1
    if scale.numel() == cols and tuple(scale.shape[-max(x.dim() - 1, 1):]) == tuple(x.shape[1:]) \
            and all(s == 1 for s in scale.shape[: scale.dim() - (x.dim() - 1)]):
        return 2
    return None


def _flat(t: Tensor, x: Tensor) -> Tensor:
    return t.to(dtype=torch.float32, device=x.device).reshape(-1).contiguous()


RANGES = {"given": 0, "affine": 1, "symmetric": 2}


@functools.lru_cache(maxsize=None)
def _float32_reciprocal(levels: int) -> float:
    """``1 / levels`` rounded to float32, as torch forms it to divide by a number on CUDA."""
    return (torch.ones((), dtype=torch.float32) / levels).item()


def _launch(x: Tensor, a: Tensor, b: Tensor, qmin, qmax, clipped: bool, mode: int, rng: int,
            grad: Optional[Tensor] = None, grid_out: Optional[tuple] = None,
            bias: Optional[Tensor] = None) -> Tensor:
    """``a``, ``b``: flat float32 scale / zero point (``rng`` 0) or min / max (1, 2).
    ``grid_out`` ``(scale, zero_point)``, two ``(G,)`` float32 tensors (forward with ``rng``
    1 or 2): receive the grid formed on chip, ``G`` = 1, rows or columns as ``mode``.
    ``bias``: forward only, a float32 ``(C,)`` added to every row of the ``(R, C)`` result."""
    from qgnn.kernels import _triton_kernels as tk
    from qgnn.quant.functional import MIN_SCALE

    out = torch.empty_like(x)
    n = x.numel()
    cols = max(n // x.shape[0], 1) if x.dim() else 1  # not x[0].numel(): a view op per call
    levels = (qmax - qmin) if rng == RANGES["affine"] else max(qmax, 1)
    inv = _float32_reciprocal(int(levels))
    gs, gz = grid_out if grid_out is not None else (x, x)
    launch_kernel(
        tk.fake_quant_kernel, (max(1, -(-n // BLOCK)),),
        x, a, b, grad if grad is not None else x, out, gs, gz, n, cols, float(qmin), float(qmax),
        MIN_SCALE, inv, MODE=mode, CLIPPED=clipped, BACKWARD=grad is not None, RANGE=rng,
        RECIPROCAL=x.is_cuda, GRID_OUT=grid_out is not None, BLOCK=BLOCK, num_warps=4,
        **(dict(bias_ptr=bias, ADD_BIAS=True) if bias is not None else {}),
    )
    return out


class FakeQuantizeFunction(torch.autograd.Function):
    """Forward: the fake-quantized ``x`` (plus ``bias`` when given). Backward: ``g``
    (``"ste"``), or ``g`` where the value fell inside ``[qmin, qmax]`` and 0 where clamped
    (``"clipped"``, computed as torch's autograd does, ``(g * scale) / scale``); the bias's
    gradient is the column sums of ``g``. ``a``, ``b``: see :func:`_launch`."""

    @staticmethod
    def forward(ctx, x, a, b, qmin, qmax, clipped, mode, rng, grid_out=None, bias=None):
        ctx.args = (qmin, qmax, clipped, mode, rng)
        if clipped:
            # copies: an observer's min / max change in place at its next call
            ctx.save_for_backward(x, a.clone() if rng else a, b.clone() if rng else b)
        return _launch(x, a, b, qmin, qmax, clipped, mode, rng, grid_out=grid_out, bias=bias)

    @staticmethod
    def backward(ctx, grad):
        qmin, qmax, clipped, mode, rng = ctx.args
        db = column_sums(grad) if ctx.needs_input_grad[9] else None
        if not clipped:
            return (grad,) + (None,) * 8 + (db,)
        x, a, b = ctx.saved_tensors
        dx = _launch(x, a, b, qmin, qmax, True, mode, rng, grad.contiguous())
        return (dx,) + (None,) * 8 + (db,)


def _apply(x, a, b, qmin, qmax, clipped, mode, rng, grid_out=None, bias=None) -> Tensor:
    """Through the autograd function where a gradient will flow, else the bare launch (its
    bookkeeping costs host time on every evaluation call)."""
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return FakeQuantizeFunction.apply(x, a, b, qmin, qmax, clipped, mode, rng, grid_out, bias)
    return _launch(x, a, b, qmin, qmax, clipped, mode, rng, grid_out=grid_out, bias=bias)


def fused_fake_quantize(x: Tensor, scale, zero_point, qmin, qmax, gradient: str) -> Optional[Tensor]:
    """The Triton fake quantization, or ``None`` where it does not apply (the caller then runs
    the torch ops): it needs a contiguous float32 ``x``, a per-tensor / per-row / per-column
    grid whose ``scale`` and ``zero_point`` need no gradient, and number bounds."""
    if x.dtype != torch.float32 or not x.is_contiguous() or x.numel() == 0:
        return None
    if isinstance(qmin, Tensor) or isinstance(qmax, Tensor):
        return None
    scale_t = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    zero_t = torch.as_tensor(zero_point, dtype=torch.float32, device=x.device)
    if scale_t.requires_grad or zero_t.requires_grad:
        return None
    mode = grid_mode(x, scale_t)
    if mode is None or (zero_t.numel() != 1 and zero_t.numel() != scale_t.numel()):
        return None
    if zero_t.numel() != scale_t.numel():
        zero_t = zero_t.expand(scale_t.shape)
    return _apply(x, _flat(scale_t, x), _flat(zero_t, x), qmin, qmax, gradient == "clipped", mode,
                  RANGES["given"])


def fused_fake_quantize_from_range(x: Tensor, min_val: Tensor, max_val: Tensor, qmin: int,
                                   qmax: int, symmetric: bool, granularity: str,
                                   gradient: str, grid_out: Optional[tuple] = None,
                                   bias: Optional[Tensor] = None) -> Optional[Tensor]:
    """:func:`fused_fake_quantize` with the grid formed on chip from an observer's range,
    as ``FakeQuantize.qparams`` forms it (symmetric or affine), instead of by a dozen small
    torch ops per call. ``min_val`` / ``max_val``: ``()``, ``(R,)`` or ``(C,)`` for
    ``granularity`` per tensor, per row or per column. ``None`` where it does not apply.

    ``grid_out``: ``(scale, zero_point)``, two ``(G,)`` float32 tensors (``G`` =
    ``min_val.numel()``) that receive the grid, so that a caller (the low-bit gather) need
    not form it again. ``bias``: a float32 ``(C,)`` for a 2-D ``x`` ``(R, C)``, added to every
    row after the rounding, in the same pass (``None`` returned for any other bias)."""
    if x.dtype != torch.float32 or not x.is_contiguous() or x.numel() == 0 or x.dim() == 0:
        return None
    if bias is not None and (x.dim() != 2 or bias.shape != (x.shape[1],)
                             or bias.dtype != torch.float32 or not bias.is_contiguous()):
        return None
    if min_val.dtype != torch.float32 or max_val.shape != min_val.shape:
        return None
    mode = {"per_tensor": 0, "per_row": 1, "per_column": 2}.get(granularity)
    if mode is None:
        return None
    want = (1, x.shape[0], x.numel() // x.shape[0])[mode]
    if min_val.numel() != want or not (min_val.is_contiguous() and max_val.is_contiguous()):
        return None
    if grid_out is not None and any(t.numel() != want or t.dtype != torch.float32
                                    for t in grid_out):
        raise ValueError(f"grid_out must be two float32 tensors of {want} value(s), got "
                         f"{[(tuple(t.shape), t.dtype) for t in grid_out]}.")
    rng = RANGES["symmetric" if symmetric else "affine"]
    # min_val / max_val go as they are: the kernel indexes them flat (no reshape views)
    return _apply(x, min_val, max_val, qmin, qmax, gradient == "clipped", mode, rng, grid_out,
                  bias)


class RangeGrid(NamedTuple):
    """A per-tensor grid given by an observer's range, for a kernel that rounds its input
    itself (plain STE) instead of reading a fake-quantized copy: ``FakeQuantize``'s rule,
    :func:`~qgnn.quant.functional.symmetric_qparams` or
    :func:`~qgnn.quant.functional.affine_qparams`, formed on chip.

    Fields: ``range`` ``(2,)`` float32 ``(min, max)``, a copy (an observer's buffers change
    in place at its next call); ``qmin``, ``qmax`` integer bounds; ``symmetric``.
    """

    range: Tensor
    qmin: int
    qmax: int
    symmetric: bool

    @classmethod
    def from_range(cls, min_val: Tensor, max_val: Tensor, qmin: int, qmax: int,
                   symmetric: bool) -> "RangeGrid":
        """From per-tensor ``min_val`` / ``max_val`` (one value each)."""
        if min_val.numel() != 1 or max_val.numel() != 1:
            raise ValueError(f"a RangeGrid is per tensor: min / max must hold one value each, "
                             f"got {min_val.numel()} and {max_val.numel()}.")
        rng = torch.stack((min_val.reshape(()), max_val.reshape(()))).to(torch.float32)
        return cls(rng, int(qmin), int(qmax), bool(symmetric))

    def qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)``, two ``()`` tensors (torch ops)."""
        from qgnn.quant import functional as QF

        lo, hi = self.range[0], self.range[1]
        if self.symmetric:
            return QF.symmetric_qparams(torch.maximum(lo.abs(), hi.abs()), self.qmin, self.qmax)
        return QF.affine_qparams(lo, hi, self.qmin, self.qmax)

    def fake_quantize(self, x: Tensor) -> Tensor:
        """``x`` rounded on this grid, plain STE, as torch ops (the reference)."""
        from qgnn.quant import functional as QF

        scale, zero_point = self.qparams()
        return QF.fake_quantize_reference(x, scale, zero_point, self.qmin, self.qmax, "ste")

    def codes(self, x: Tensor) -> Tensor:
        """The codes of ``x`` on this grid less ``qmin``, ``uint8`` (at most 256 levels),
        as torch ops."""
        from qgnn.quant import functional as QF

        scale, zero_point = self.qparams()
        return (QF.quantize(x, scale, zero_point, self.qmin, self.qmax) - self.qmin).to(torch.uint8)

    def dequantize(self, codes: Tensor) -> Tensor:
        """Float32 values of :meth:`codes` (the same numbers :meth:`fake_quantize` gives)."""
        scale, zero_point = self.qparams()
        return (codes.to(torch.float32) + self.qmin - zero_point) * scale

    @property
    def fits_uint8(self) -> bool:
        return self.qmax - self.qmin <= 255

    def rounded(self, x: Tensor) -> Tensor:
        """:meth:`fake_quantize` without gradient, in one Triton pass where it applies."""
        if use_triton(x) and x.dtype == torch.float32 and x.is_contiguous() and x.numel():
            return _launch(x, self.range[:1], self.range[1:], self.qmin, self.qmax, False, 0,
                           self.code())
        with torch.no_grad():
            return self.fake_quantize(x)

    def kernel_args(self, x: Tensor) -> dict:
        """The arguments of a Triton kernel's fused rounding of ``x`` (``q_range_ptr`` ..
        ``RECIPROCAL``, see ``_range_grid`` in :mod:`qgnn.kernels._triton_kernels`), less its
        ``QUANT_*`` switch, whose value is :meth:`code`."""
        from qgnn.quant.functional import MIN_SCALE

        levels = max(self.qmax, 1) if self.symmetric else self.qmax - self.qmin
        return dict(q_range_ptr=self.range, QMIN=float(self.qmin), QMAX=float(self.qmax),
                    MIN_SCALE=MIN_SCALE, INV_DIV=_float32_reciprocal(int(levels)),
                    RECIPROCAL=x.is_cuda)

    def code(self) -> int:
        """The kernels' ``QUANT_*`` value: 1 affine, 2 symmetric."""
        return RANGES["symmetric" if self.symmetric else "affine"]
