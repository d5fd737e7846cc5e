"""Range observers: statistics that choose the ``[min, max]`` a quantizer covers.

An observer is called on (a detached copy of) the tensor being quantized while training and
keeps its running range in buffers ``min_val`` / ``max_val``, so ranges are saved in the
state dict. Each observer works per tensor, per row (node / output channel) or per column
(feature channel); per-group buffers take their shape from the first tensor observed.

- :class:`MinMaxObserver`: momentum average of batch min/max (vanilla QAT, momentum 0.01).
- :class:`RunningExtremumObserver`: the extremes seen so far.
- :class:`PercentileObserver`: momentum average of batch percentiles, computed on a random
  sample for large tensors (Degree-Quant).

Example::

    >>> import torch
    >>> from qgnn.quant.observers import MinMaxObserver
    >>> obs = MinMaxObserver(momentum=0.5)
    >>> obs(torch.tensor([0.0, 2.0])); obs(torch.tensor([-2.0, 4.0]))
    >>> obs.min_val, obs.max_val
    (tensor(-1.), tensor(3.))
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from qgnn.quant import functional as QF

Tensor = torch.Tensor


class ResizeOnLoad:
    """Mixin for modules whose listed tensors take their shape from data.

    ``load_state_dict`` resizes those parameters / buffers to the saved shape first (in
    place, so a parameter keeps its identity in an optimizer), instead of failing on a shape
    mismatch between a fresh module and a trained one.
    """

    _lazy_tensors: tuple[str, ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._lazy_tensors:
            key = prefix + name
            local = getattr(self, name, None)
            if key in state_dict and isinstance(local, Tensor) and local.shape != state_dict[key].shape:
                local.data = local.data.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Observer(ResizeOnLoad, nn.Module):
    """Base class: ``observer(x)`` updates the range; ``min_val`` / ``max_val`` hold it.

    Args:
        granularity: ``"per_tensor"``, ``"per_row"`` or ``"per_column"`` (see
            :func:`qgnn.quant.functional.reduce_dims`).

    Buffers: ``min_val``, ``max_val`` (shape ``()`` per tensor, else the group shape) and
    ``initialized`` (a bool scalar).
    """

    _lazy_tensors = ("min_val", "max_val")

    def __init__(self, granularity: str = "per_tensor"):
        super().__init__()
        if granularity not in QF.GRANULARITIES:
            raise ValueError(f"granularity must be one of {QF.GRANULARITIES}, got {granularity!r}.")
        self.granularity = granularity
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False

    def batch_range(self, x: Tensor, exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(min, max)`` of this batch, per group, leaving out the rows where ``exclude``."""
        dims = QF.reduce_dims(x, self.granularity)
        if exclude is None:
            # aminmax: one pass over x instead of two (the values are the same)
            if len(dims) == x.dim():
                return torch.aminmax(x)
            if len(dims) == 1:
                return torch.aminmax(x, dim=dims[0])
            return x.amin(dim=dims), x.amax(dim=dims)
        rows = exclude.reshape((-1,) + (1,) * (x.dim() - 1))
        # masked with +-inf rather than indexed: boolean indexing waits for the GPU
        return (x.masked_fill(rows, float("inf")).amin(dim=dims),
                x.masked_fill(rows, float("-inf")).amax(dim=dims))

    def combine(self, lo: Tensor, hi: Tensor) -> None:
        """Fold a batch range into the running range (called once initialized)."""
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        """Whether a range has been observed (``initialized``), read from the device once."""
        if not self._ready:
            self._ready = bool(self.initialized)
        return self._ready

    def reset(self) -> None:
        """Forget the range: the next batch sets it again."""
        self.initialized.fill_(False)
        self._ready = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = False

    @torch.no_grad()
    def forward(self, x: Tensor, exclude: Optional[Tensor] = None) -> None:
        """Observe ``x``; ``exclude``: ``(R,)`` bool, rows to leave out (per-tensor and
        per-column observers only)."""
        if x.numel() == 0:
            return
        if exclude is not None and self.granularity == "per_row":
            raise ValueError("a per-row observer cannot leave rows out.")
        lo, hi = self.batch_range(x, exclude)  # no_grad: x needs no detach (one op less)
        if not self.ready or self.min_val.shape != lo.shape:
            self.min_val.data = lo.clone()
            self.max_val.data = hi.clone()
            self.initialized.fill_(True)
            self._ready = True
        else:
            self.combine(lo, hi)

    def extra_repr(self) -> str:
        return f"granularity={self.granularity}"


class MinMaxObserver(Observer):
    """Momentum average of the batch min / max: ``r <- (1 - m) r + m r_batch``.

    The first batch sets the range. Args: ``momentum`` (default 0.01), ``granularity``.
    """

    def __init__(self, momentum: float = 0.01, granularity: str = "per_tensor"):
        super().__init__(granularity)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        self.momentum = momentum

    def combine(self, lo: Tensor, hi: Tensor) -> None:
        # one foreach call for both (a single dispatch; on CUDA the launches are host-bound)
        torch._foreach_lerp_([self.min_val, self.max_val], [lo, hi], self.momentum)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, granularity={self.granularity}"


class RunningExtremumObserver(Observer):
    """The smallest min and largest max seen so far."""

    def combine(self, lo: Tensor, hi: Tensor) -> None:
        torch.minimum(self.min_val, lo, out=self.min_val)
        torch.maximum(self.max_val, hi, out=self.max_val)


class PercentileObserver(MinMaxObserver):
    """Momentum average of the batch ``q`` and ``1 - q`` quantiles (per tensor).

    Tensors with more than ``sample_size`` elements are summarised by a uniform random
    sample (with replacement) of ``sample_size`` elements instead of being sorted whole; the
    sample quantile's standard error is about ``sqrt(q (1 - q) / sample_size)`` in rank.

    Args:
        q: lower tail fraction, e.g. 0.001 (0.1%) at INT8, 0.01 (1%) at INT4.
        sample_size: largest number of elements a quantile is computed on.
        momentum: as :class:`MinMaxObserver`.
    """

    def __init__(self, q: float, sample_size: int = 65536, momentum: float = 0.01):
        super().__init__(momentum, "per_tensor")
        if not 0.0 <= q < 0.5:
            raise ValueError(f"percentile fraction must be in [0, 0.5), got {q}.")
        if sample_size < 1:
            raise ValueError(f"sample_size must be positive, got {sample_size}.")
        self.q = q
        self.sample_size = sample_size
        # both tails' fractions, as float32 (what q * n would round them to); not saved
        self.register_buffer("_tails", torch.tensor([q, 1.0 - q]), persistent=False)

    def batch_range(self, x: Tensor, exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        flat = x.reshape(x.shape[0], -1) if x.dim() else x.reshape(1, 1)
        if exclude is not None:  # excluded rows become NaN, which sorts last
            flat = flat.masked_fill(exclude.reshape(-1, 1), float("nan"))
        flat = flat.reshape(-1)
        if flat.numel() > self.sample_size:
            index = torch.randint(flat.numel(), (self.sample_size,), device=flat.device)
            flat = flat.index_select(0, index)
        ordered = flat.float().sort().values
        last = (~ordered.isnan()).sum().clamp(min=1) - 1
        # torch.quantile's linear interpolation, with the positions kept on the device
        # (no host round trip per call; rows left out are NaN and not counted)
        lo, hi = _order_statistics(ordered, last * self._tails.to(ordered.device)).unbind(0)
        return lo.to(x.dtype), hi.to(x.dtype)

    def extra_repr(self) -> str:
        return f"q={self.q}, sample_size={self.sample_size}, momentum={self.momentum}"


def _order_statistics(ordered: Tensor, positions: Tensor) -> Tensor:
    """Values at fractional ``positions`` ``(P,)`` of a sorted vector, each interpolated
    linearly between its neighbours: ``(P,)``. All positions in one gather (a DQ training
    step calls this twice per quantizer, so its op count is host time on the GPU)."""
    below = positions.floor()
    index = torch.cat([below.long(), positions.ceil().long()])
    # index_select, not ordered[...]: indexing with a 0-dim tensor reads it back to the host
    values = ordered.index_select(0, index)
    lo, hi = values[: positions.numel()], values[positions.numel():]
    return lo + (hi - lo) * (positions - below)
