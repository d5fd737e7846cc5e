"""Quantization primitives: integer grids, the rounding rule, gradient rules, scale rules.

Every function here is stateless and takes its quantization parameters explicitly, in the
spirit of Brevitas's ``core`` package: the statistics that choose a range live in
:mod:`qgnn.quant.observers`, learnable steps and bit widths in :mod:`qgnn.quant.learnable`,
and :mod:`qgnn.quant.quantizers` composes them.

The rounding rule (DESIGN §3)::

    q(x) = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale

with ``[qmin, qmax]`` holding exactly ``2**bits`` integers: ``[-2**(b-1), 2**(b-1) - 1]``
when signed, ``[0, 2**b - 1]`` when unsigned.

Gradient rules (the ``gradient`` argument of :func:`fake_quantize`):

- ``"ste"``: plain straight-through estimator, ``dq/dx = 1`` everywhere (also where the value
  was clamped); no gradient reaches ``scale`` or ``zero_point``.
- ``"clipped"``: ``dq/dx = 1`` inside ``[qmin, qmax]`` and 0 where the value was clamped.
  When ``scale`` (or ``qmin`` / ``qmax``) require grad, autograd through the same expression
  gives the LSQ gradient of the step (Esser et al., 2020)::

      dq/ds = round(x/s) - x/s   inside,   qmin or qmax   where clamped

  and, through ``qmax = 2**(b-1) - 1``, the gradient of a learnable bit width.

Example::

    >>> import torch
    >>> from qgnn.quant import functional as QF
    >>> qmin, qmax = QF.int_range(2, signed=True)
    >>> (qmin, qmax)
    (-2, 1)
    >>> QF.fake_quantize(torch.tensor([-3.0, -0.6, 0.4, 9.0]), 1.0, 0.0, qmin, qmax)
    tensor([-2., -1.,  0.,  1.])
"""

from __future__ import annotations

from typing import Union

import torch

from qgnn.kernels._common import use_triton
from qgnn.kernels.fake_quant import fused_fake_quantize

Tensor = torch.Tensor
Number = Union[int, float]
GRADIENTS = ("ste", "clipped")
GRANULARITIES = ("per_tensor", "per_row", "per_column")

# Smallest step a scale rule returns; keeps x / scale finite for constant tensors.
MIN_SCALE = 1e-8


def int_range(bits, signed: bool):
    """``(qmin, qmax)`` of a ``bits``-bit integer grid: exactly ``2**bits`` levels.

    ``bits`` may be an int (returns ints) or a float tensor holding integer values (returns
    tensors through which gradients reach ``bits``, for learnable bit widths).
    """
    if isinstance(bits, Tensor):
        if signed:
            half = torch.pow(2.0, bits - 1)
            return -half, half - 1
        return torch.zeros_like(bits), torch.pow(2.0, bits) - 1
    bits = int(bits)
    if bits < 1:
        raise ValueError(f"bits must be at least 1, got {bits}.")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass."""
    return _straight_through(torch.round(x.detach()), x)


def _straight_through(value: Tensor, x: Tensor) -> Tensor:
    # ``value`` exactly (x - x.detach() is exactly zero), with the gradient of ``x``;
    # ``x + (value - x).detach()`` would leave float residue off the grid.
    return value + (x - x.detach())


def grad_scale(x: Tensor, factor: float) -> Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``factor`` (LSQ's step scaling)."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def _clamp(v: Tensor, qmin, qmax) -> Tensor:
    # torch.where instead of torch.clamp so that tensor bounds receive the gradient where
    # the value was clamped and the value keeps it at equality (LSQ's convention).
    if isinstance(qmin, Tensor) or isinstance(qmax, Tensor):
        qmin = torch.as_tensor(qmin, dtype=v.dtype, device=v.device)
        qmax = torch.as_tensor(qmax, dtype=v.dtype, device=v.device)
        return torch.where(v > qmax, qmax, torch.where(v < qmin, qmin, v))
    return v.clamp(qmin, qmax)


def quantize(x: Tensor, scale, zero_point, qmin, qmax) -> Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` (float dtype, no grad).

    Shapes: ``scale`` and ``zero_point`` broadcast against ``x``.
    """
    with torch.no_grad():
        return _clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(codes: Tensor, scale, zero_point) -> Tensor:
    """``(codes - zero_point) * scale``."""
    return (codes - zero_point) * scale


def fake_quantize(x: Tensor, scale, zero_point, qmin, qmax, gradient: str = "clipped",
                  fused: bool = True) -> Tensor:
    """Quantize and dequantize ``x`` on the grid ``scale * ([qmin, qmax] - zero_point)``.

    Args:
        x: any shape.
        scale: step, a number or a tensor broadcasting against ``x`` (per channel / per
            node: shape ``(C, 1, ...)`` or ``(1, C)`` etc.). Must be positive.
        zero_point: integer offset (number or tensor like ``scale``); 0 for symmetric grids.
        qmin, qmax: integer bounds (numbers, or tensors for learnable bit widths).
        gradient: ``"ste"`` or ``"clipped"`` (see the module docstring).
        fused: allow the Triton pass below (``False``: always the torch ops).

    Returns:
        a tensor shaped like ``x`` taking at most ``qmax - qmin + 1`` distinct values per
        ``(scale, zero_point)`` group.

    On CUDA a fixed grid (``scale`` / ``zero_point`` without gradient, number bounds) runs
    as one Triton pass with the same results (:mod:`qgnn.kernels.fake_quant`); elsewhere,
    and for learnable steps or bit widths, :func:`fake_quantize_reference` runs.
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}.")
    if fused and use_triton(x):
        out = fused_fake_quantize(x, scale, zero_point, qmin, qmax, gradient)
        if out is not None:
            return out
    return fake_quantize_reference(x, scale, zero_point, qmin, qmax, gradient)


def fake_quantize_reference(x: Tensor, scale, zero_point, qmin, qmax, gradient: str = "clipped") -> Tensor:
    """:func:`fake_quantize` as torch ops (differentiable w.r.t. every tensor argument)."""
    if gradient == "ste":
        with torch.no_grad():
            out = dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)
        return _straight_through(out, x)
    if gradient == "clipped":
        v = _clamp(x / scale + zero_point, qmin, qmax)
        return (round_ste(v) - zero_point) * scale
    raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}.")


class _RowwiseLocalFakeQuantize(torch.autograd.Function):
    """Forward: ``q = round(clamp(x / s, qmin, qmax)) * s`` with one ``(s, qmin, qmax)`` per row.

    Backward: ``x`` gets the task gradient through the clipped STE; ``s``, ``qmin`` and
    ``qmax`` get, instead of the task gradient, the gradient of the local error
    ``E = sum((q - x)**2)`` with ``x`` held constant (A2Q's local gradient). Those per-row
    gradients are reduced in the forward pass, so only a boolean in-range mask is saved:
    each ``(N, F)`` temporary of the unfused composition (about twenty per training step)
    costs a fresh allocation and page faults on the CPU.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
        rows = x.shape[0]
        shape = (rows,) + (1,) * (x.dim() - 1)
        s, lo, hi = scale.reshape(shape), qmin.reshape(shape), qmax.reshape(shape)
        v = x / s
        above, below = v > hi, v < lo
        clamped = above | below
        v.clamp_(lo, hi)  # the same values as _clamp (a tie with a bound stays inside)
        codes = torch.round(v)
        q = codes * s
        inside = ~clamped
        ctx.save_for_backward(inside)
        if any(ctx.needs_input_grad[1:]):
            twice_err = (q - x).mul_(2.0).reshape(rows, -1)
            # dq/ds: round(v) - v inside, the bound (= codes) where clamped; in place, and
            # without boolean indexing (a host sync on the GPU).
            dq_ds = v.mul_(inside).neg_().add_(codes)
            need_s, need_lo, need_hi = ctx.needs_input_grad[1:]
            ctx.local = (
                torch.einsum("nf,nf->n", twice_err, dq_ds.reshape(rows, -1)) if need_s else None,
                torch.where(below.reshape(rows, -1), twice_err, 0.0).sum(1) * scale if need_lo else None,
                torch.where(above.reshape(rows, -1), twice_err, 0.0).sum(1) * scale if need_hi else None,
            )
        return q

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inside,) = ctx.saved_tensors
        grad_x = torch.where(inside, grad, 0.0) if ctx.needs_input_grad[0] else None
        if not any(ctx.needs_input_grad[1:]):
            return grad_x, None, None, None
        d_scale, d_qmin, d_qmax = ctx.local
        return grad_x, d_scale, d_qmin, d_qmax


def fake_quantize_local(x: Tensor, scale: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
    """Row-wise symmetric fake quantization trained by a local objective (A2Q).

    The value equals ``fake_quantize(x, scale, 0, qmin, qmax, "clipped")`` with
    ``scale``, ``qmin``, ``qmax`` of shape ``(N,)`` broadcast over the rows of ``x``. In the
    backward pass ``x`` receives the task gradient (clipped STE), while ``scale`` and the
    bounds receive the gradient of ``sum((q - x)**2)`` (``x`` constant) and none of the task
    gradient: the same gradients as the unfused composition, in a few passes over ``x``.

    Shapes: ``x`` ``(N, *F)``; ``scale``, ``qmin``, ``qmax`` ``(N,)`` -> ``(N, *F)``.
    """
    return _RowwiseLocalFakeQuantize.apply(x, scale, qmin, qmax)


# --------------------------------------------------------------------------- scale rules
def symmetric_qparams(absmax: Tensor, qmin, qmax) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` mapping ``[-absmax, absmax]`` (signed) or ``[0, absmax]``
    (unsigned, ``qmin == 0``) onto the grid, zero point 0.

    The largest representable value is ``qmax * scale = absmax``; a signed grid keeps its
    extra negative level ``qmin = -(qmax + 1)`` for values below ``-absmax``.
    """
    scale = (absmax / max(qmax, 1)).clamp_min(MIN_SCALE)
    return scale, torch.zeros_like(scale)


def affine_qparams(min_val: Tensor, max_val: Tensor, qmin: int, qmax: int) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` mapping ``[min(min_val, 0), max(max_val, 0)]`` onto ``[qmin, qmax]``.

    The range is widened to contain 0 so that zero (padding, ReLU output) is exact; for
    non-negative data this uses every level for ``[0, max]``, as an unsigned grid would.
    """
    lo = torch.minimum(min_val, torch.zeros_like(min_val))
    hi = torch.maximum(max_val, torch.zeros_like(max_val))
    scale = ((hi - lo) / float(qmax - qmin)).clamp_min(MIN_SCALE)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point


# --------------------------------------------------------------------------- granularity
def reduce_dims(x: Tensor, granularity: str) -> tuple[int, ...]:
    """Dims of ``x`` reduced to one statistic per group.

    ``per_tensor``: all dims. ``per_row``: all but dim 0 (one group per node, or per output
    channel of a weight ``(C_out, C_in)``). ``per_column``: dim 0 only (one group per
    feature channel of a node tensor ``(N, *F)``).
    """
    if granularity == "per_tensor":
        return tuple(range(x.dim()))
    if granularity == "per_row":
        return tuple(range(1, x.dim()))
    if granularity == "per_column":
        return (0,)
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")


def group_shape(x: Tensor, granularity: str) -> tuple[int, ...]:
    """Shape of a per-group statistic (before broadcasting): ``()``, ``(N,)`` or ``x.shape[1:]``."""
    if granularity == "per_tensor":
        return ()
    if granularity == "per_row":
        return (x.shape[0],)
    if granularity == "per_column":
        return tuple(x.shape[1:])
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")


def broadcastable(stat: Tensor, x: Tensor, granularity: str) -> Tensor:
    """Reshape a per-group statistic so that it broadcasts against ``x``."""
    if granularity == "per_row":
        return stat.reshape((-1,) + (1,) * (x.dim() - 1))
    return stat  # per_tensor: scalar; per_column: x.shape[1:] broadcasts from the right
