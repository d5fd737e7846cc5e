"""Fused LoRAP injection: ``out = s + (softmax(z W_a^T + b_a) U) V``.

Shapes: ``s`` ``(N, d)``; ``z`` (score input, default ``s``) ``(N, d_in)``; ``weight_a``
``(k, d_in)`` (``nn.Linear`` layout); ``bias_a`` ``(k,)``; ``U`` ``(k, r)``; ``V`` ``(r, d)``.
The bases ``P = U V`` are never formed: ``(alpha U) V`` costs ``r (k + d)`` per row instead
of ``k d``.

:func:`lorap_inject` runs the Triton kernels on CUDA (or anywhere under
``QGNN_FORCE_TRITON=1``, e.g. the CPU interpreter with ``TRITON_INTERPRET=1``) and
:func:`lorap_reference` otherwise. The Triton forward reads ``s`` (and ``z``) once and
writes ``out`` once; the backward recomputes ``alpha`` from ``z`` rather than storing it.
"""

from __future__ import annotations

from typing import Optional

import torch

from qgnn.kernels._common import alloc, dot_precision, num_sms, use_triton

Tensor = torch.Tensor

# Row block and warps for the Triton kernels; chosen on one H100 (benchmarks/bench_kernels.py).
FWD_BLOCK_M = 16
FWD_WARPS = 8
FWD_HOIST_W = True
BWD_BLOCK_M = 16
BWD_WARPS = 8
# Persistent grids: this many programs per multiprocessor.
FWD_PROGRAMS_PER_SM = 4
BWD_PROGRAMS_PER_SM = 1
# Software-pipelining depth of the row loop; 1 keeps shared memory small (the W_a tiles
# already take 64 KB at d=256) so that several programs fit on one multiprocessor.
FWD_STAGES = 1
BWD_STAGES = 1


def lorap_reference(
    s: Tensor,
    weight_a: Tensor,
    bias_a: Tensor,
    U: Tensor,
    V: Tensor,
    score_input: Optional[Tensor] = None,
) -> Tensor:
    """LoRAP head in plain torch ops (the readable definition; differentiable).

    Args:
        s: ``(N, d)`` aggregated features.
        weight_a: ``(k, d_in)`` scorer weight; ``bias_a``: ``(k,)``.
        U: ``(k, r)``; V: ``(r, d)``.
        score_input: ``(N, d_in)`` scorer input ``z``; ``None`` means ``s`` (``d_in = d``).

    Returns:
        ``(N, d)``: ``s + (softmax(z W_a^T + b_a) U) V``.
    """
    z = s if score_input is None else score_input
    alpha = torch.softmax(torch.nn.functional.linear(z, weight_a, bias_a), dim=-1)
    return s + (alpha @ U) @ V


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _check(s, weight_a, bias_a, U, V, z) -> None:
    if s.dim() != 2:
        raise ValueError(f"s must be (N, d), got shape {tuple(s.shape)}.")
    n, d = s.shape
    k, r = U.shape
    d_in = d if z is None else z.shape[1]
    if z is not None and (z.dim() != 2 or z.shape[0] != n):
        raise ValueError(f"score_input must be ({n}, d_in), got shape {tuple(z.shape)}.")
    expect = {"weight_a": (k, d_in), "bias_a": (k,), "V": (r, d)}
    for name, t in (("weight_a", weight_a), ("bias_a", bias_a), ("V", V)):
        if tuple(t.shape) != expect[name]:
            raise ValueError(f"{name} must have shape {expect[name]}, got {tuple(t.shape)}.")


def _meta(d: int, d_in: int, k: int, r: int) -> dict:
    return dict(
        R=r,
        BLOCK_D=max(16, _next_pow2(d)),
        BLOCK_DIN=max(16, _next_pow2(d_in)),
        K_PAD=max(16, _next_pow2(k)),
        PREC=dot_precision(),
    )


def lorap_forward_triton(s, weight_a, bias_a, U, V, score_input=None, out=None,
                         block_m=None, num_warps=None, num_stages=None):
    """Triton forward, no autograd. ``out`` (``(N, d)``, optional) receives the result."""
    from qgnn.kernels import _triton_kernels as tk

    n, d = s.shape
    k, r = U.shape
    z = score_input
    d_in = d if z is None else z.shape[1]
    out = alloc((n, d), s) if out is None else out
    block_m = block_m or FWD_BLOCK_M
    tiles = -(-n // block_m)
    grid = (max(1, min(tiles, FWD_PROGRAMS_PER_SM * num_sms(s.device))),)
    tk.lorap_fwd_kernel[grid](
        s, s if z is None else z, weight_a, bias_a, U, V, out,
        n, d, d_in, k,
        SEPARATE_Z=z is not None, BLOCK_M=block_m, num_warps=num_warps or FWD_WARPS,
        num_stages=num_stages or FWD_STAGES, HOIST_W=FWD_HOIST_W,
        **_meta(d, d_in, k, r),
    )
    return out


def lorap_backward_triton(g, s, weight_a, bias_a, U, V, score_input=None,
                          block_m=None, num_warps=None):
    """Triton backward, no autograd.

    Returns ``(ds, dz, dW_a, db_a, dU, dV)``; ``dz`` is ``None`` when the score input is
    ``s`` (its gradient is then folded into ``ds``).
    """
    from qgnn.kernels import _triton_kernels as tk

    n, d = s.shape
    k, r = U.shape
    z = score_input
    d_in = d if z is None else z.shape[1]
    block_m = block_m or BWD_BLOCK_M
    tiles = -(-n // block_m)
    progs = max(1, min(tiles, BWD_PROGRAMS_PER_SM * num_sms(s.device)))
    f32 = torch.float32
    ds = alloc((n, d), s)
    dz = alloc((n, d_in), z) if z is not None else ds
    dwa_part = alloc((progs, k, d_in), s, f32)
    dba_part = alloc((progs, k), s, f32)
    du_part = alloc((progs, k, r), s, f32)
    dv_part = alloc((progs, r, d), s, f32)
    tk.lorap_bwd_kernel[(progs,)](
        g, s, s if z is None else z, weight_a, bias_a, U, V,
        ds, dz, dwa_part, dba_part, du_part, dv_part,
        n, d, d_in, k,
        SEPARATE_Z=z is not None, R_PAD=max(2, _next_pow2(r)), BLOCK_M=block_m,
        num_warps=num_warps or BWD_WARPS, num_stages=BWD_STAGES, **_meta(d, d_in, k, r),
    )
    return (
        ds,
        dz if z is not None else None,
        dwa_part.sum(0).to(weight_a.dtype),
        dba_part.sum(0).to(bias_a.dtype),
        du_part.sum(0).to(U.dtype),
        dv_part.sum(0).to(V.dtype),
    )


class LorapInjectFunction(torch.autograd.Function):
    """Autograd wrapper around the Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, s, weight_a, bias_a, U, V, score_input):
        ctx.save_for_backward(s, weight_a, bias_a, U, V, score_input)
        return lorap_forward_triton(s, weight_a, bias_a, U, V, score_input)

    @staticmethod
    def backward(ctx, grad):
        s, weight_a, bias_a, U, V, z = ctx.saved_tensors
        ds, dz, dwa, dba, du, dv = lorap_backward_triton(
            grad.contiguous(), s, weight_a, bias_a, U, V, z
        )
        return ds, dwa, dba, du, dv, dz


def lorap_inject(
    s: Tensor,
    weight_a: Tensor,
    bias_a: Tensor,
    U: Tensor,
    V: Tensor,
    score_input: Optional[Tensor] = None,
) -> Tensor:
    """``s + (softmax(z W_a^T + b_a) U) V``, fused on CUDA; same signature as the reference.

    Args:
        s: ``(N, d)``; float32 (bf16 / fp16 inputs are computed in float32 on chip).
        weight_a: ``(k, d_in)``; bias_a: ``(k,)``; U: ``(k, r)``; V: ``(r, d)``.
        score_input: ``(N, d_in)`` or ``None`` (score on ``s`` itself).

    Returns:
        ``(N, d)``, differentiable w.r.t. every tensor argument.
    """
    _check(s, weight_a, bias_a, U, V, score_input)
    if not use_triton(s, weight_a, bias_a, U, V, score_input):
        return lorap_reference(s, weight_a, bias_a, U, V, score_input)
    args = [t.contiguous() for t in (s, weight_a, bias_a, U, V)]
    z = score_input.contiguous() if score_input is not None else None
    return LorapInjectFunction.apply(*args, z)
