"""Fake quantization with a fixed grid as one Triton pass (forward) and one (clipped backward).

Same maths and the same float32 results as :func:`qgnn.quant.functional.fake_quantize`
(division and round-half-to-even as torch does them), for a ``scale`` / ``zero_point`` that
need no gradient (observer ranges: vanilla QAT, Degree-Quant, MixQ's candidates) and fixed
integer bounds. Torch's eager version runs 6-8 elementwise kernels per call; at ogbn-arxiv
size each one is a full pass over the tensor.

Shapes: ``x`` ``(R, *C)`` float32; ``scale`` and ``zero_point`` one number (per tensor), one
per row (``(R, 1, ...)``) or one per column (``C`` values, broadcasting from the right).
"""

from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor
BLOCK = 1024


def grid_mode(x: Tensor, scale: Tensor) -> Optional[int]:
    """0 per-tensor, 1 per-row, 2 per-column, or ``None`` when ``scale`` broadcasts otherwise."""
    if x.dim() == 0:
        return None
    if scale.numel() == 1:
        return 0
    rows, cols = x.shape[0], x[0].numel()
    if scale.dim() == x.dim() and scale.shape[0] == rows and scale.numel() == rows:
        return 1
    if scale.numel() == cols and tuple(scale.shape[-max(x.dim() - 1, 1):]) == tuple(x.shape[1:]) \
            and all(s == 1 for s in scale.shape[: scale.dim() - (x.dim() - 1)]):
        return 2
    return None


def _flat(t, x: Tensor) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).contiguous()


def _launch(x: Tensor, scale: Tensor, zero_point, qmin, qmax, clipped: bool, mode: int,
            grad: Optional[Tensor] = None) -> Tensor:
    from qgnn.kernels import _triton_kernels as tk

    out = torch.empty_like(x)
    n = x.numel()
    cols = max(x[0].numel(), 1) if x.dim() else 1
    tk.fake_quant_kernel[(max(1, -(-n // BLOCK)),)](
        x, _flat(scale, x), _flat(zero_point, x), grad if grad is not None else x, out,
        n, cols, float(qmin), float(qmax),
        MODE=mode, CLIPPED=clipped, BACKWARD=grad is not None, BLOCK=BLOCK, num_warps=4,
    )
    return out


class FakeQuantizeFunction(torch.autograd.Function):
    """Forward: the fake-quantized ``x``. Backward: ``g`` (``"ste"``), or ``g`` where the
    value fell inside ``[qmin, qmax]`` and 0 where clamped (``"clipped"``, computed as torch's
    autograd does, ``(g * scale) / scale``)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, clipped, mode):
        ctx.args = (qmin, qmax, clipped, mode)
        if clipped:
            ctx.save_for_backward(x, scale, zero_point)
        return _launch(x, scale, zero_point, qmin, qmax, clipped, mode)

    @staticmethod
    def backward(ctx, grad):
        qmin, qmax, clipped, mode = ctx.args
        if not clipped:
            return grad, None, None, None, None, None, None
        x, scale, zero_point = ctx.saved_tensors
        dx = _launch(x, scale, zero_point, qmin, qmax, True, mode, grad.contiguous())
        return dx, None, None, None, None, None, None


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
    return FakeQuantizeFunction.apply(x, scale_t.detach(), zero_t.detach(), qmin, qmax,
                                      gradient == "clipped", mode)
