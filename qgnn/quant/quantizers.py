"""Quantizer modules composed from the primitives, observers and the graph context.

Each quantizer maps a tensor to its fake-quantized copy (same shape) and can be used on a
plain tensor, inside a qgnn layer (as ``layer.quant[site]``) or inside any PyTorch / DGL
model. All keep their state in parameters and buffers, so ``state_dict`` round-trips
through ``torch.load(weights_only=True)``.

- :class:`FakeQuantize`: an observer plus the rounding rule (vanilla QAT, Degree-Quant).
- :class:`LSQQuantizer`: learnable step per tensor / row / column at fixed bits (A2Q weights).
- :class:`NodeWiseQuantizer`: learnable step and bit width per node, or a bank of
  ``(step, bits)`` rows picked per node, trained by each node's own quantization error (A2Q).
- :class:`MaskedQuantizer`: Degree-Quant's protective mask around a :class:`FakeQuantize`.
- :class:`MixedQuantizer`: MixQ's softmax mixture over candidate bit widths.

Every quantizer records the element count and average bit width of the last tensor it
quantized (buffers ``observed_numel``, ``observed_bits``) for :func:`qgnn.quant.size_report`.
``code_grid(y)`` returns the integer grid (:class:`~qgnn.kernels.lowbit.CodeGrid`) that
its output ``y`` lies on, or ``None`` where it has none (float pass-through, mixtures,
per-node bit widths), so the aggregation can gather ``y`` as packed low-bit codes.
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Optional, Sequence

import torch
from torch import nn

from qgnn.kernels._common import use_triton
from qgnn.kernels.fake_quant import RangeGrid, fused_fake_quantize_from_range
from qgnn.kernels.lowbit import CodeGrid
from qgnn.quant import functional as QF
from qgnn.quant.context import QuantContext
from qgnn.quant.observers import MinMaxObserver, Observer, ResizeOnLoad

Tensor = torch.Tensor


class QuantizerBase(ResizeOnLoad, nn.Module):
    """Common bookkeeping: what the last quantized tensor cost in storage.

    Buffers: ``observed_numel`` (int64 scalar), ``observed_bits`` (average bits per element
    of that tensor; ``nominal_bits`` until a tensor has been seen).
    """

    nominal_bits: float = 32.0
    # per-call caches (a weak reference to the last output, scratch buffers): not state, and
    # a weak reference cannot be pickled, so torch.save(model) leaves them out
    _CALL_CACHES = ("_last_grid", "_grid_buffer")

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._CALL_CACHES:
            state.pop(name, None)
        return state

    def __init__(self):
        super().__init__()
        self.register_buffer("observed_numel", torch.tensor(0, dtype=torch.long))
        self.register_buffer("observed_bits", torch.tensor(0.0))

    def _record(self, x: Tensor, bits) -> None:
        if isinstance(bits, Tensor):
            self.observed_numel.fill_(x.numel())
            self.observed_bits.fill_(bits)
            self._recorded = None
            return
        # Fixed widths record the same pair on every call; skip the two (launch-bound, on
        # CUDA) buffer writes when nothing changed since the last one.
        key = (x.numel(), float(bits))
        if getattr(self, "_recorded", None) != key:
            self.observed_numel.fill_(key[0])
            self.observed_bits.fill_(key[1])
            self._recorded = key

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._recorded = None

    def storage_bits(self) -> float:
        """Average bits per element of the last tensor (``nominal_bits`` if none yet)."""
        return float(self.observed_bits) if int(self.observed_numel) > 0 else float(self.nominal_bits)

    def code_grid(self, y: Tensor) -> Optional[CodeGrid]:
        """The integer grid of this quantizer's last output ``y`` ``(N, d)``; ``None``: none."""
        return None


class FakeQuantize(QuantizerBase):
    """Observer-driven fake quantization with a fixed bit width.

    While training, the observer updates the range from each input; the range then gives
    ``(scale, zero_point)`` (symmetric or affine) and :func:`~qgnn.quant.functional.fake_quantize`
    rounds. Before the observer has seen any data the input passes through unchanged.

    Args:
        bits: bit width ``b``: the grid has exactly ``2**b`` levels.
        symmetric: zero point 0 and range ``[-absmax, absmax]`` (signed) or ``[0, absmax]``
            (unsigned); otherwise affine over ``[min, max]`` widened to contain 0.
        signed: signed grid ``[-2**(b-1), 2**(b-1) - 1]`` or unsigned ``[0, 2**b - 1]``.
            An affine quantizer covers the data's own range either way.
        observer: range statistics (default :class:`MinMaxObserver` with momentum 0.01).
        gradient: ``"ste"`` (plain) or ``"clipped"`` (zero gradient where clamped).
        fused: on CUDA, round in one Triton pass (:mod:`qgnn.kernels.fake_quant`; the same
            results as the torch ops, which ``False`` keeps).

    Shapes: any ``x`` -> same shape; a per-row observer needs ``x`` ``(R, ...)``, a
    per-column one ``(N, *C)``.

    Example::

        >>> import torch
        >>> from qgnn.quant import FakeQuantize
        >>> q = FakeQuantize(bits=2)                  # affine, momentum min/max, plain STE
        >>> y = q(torch.linspace(-1.0, 2.0, 100))     # training mode: observes, then rounds
        >>> y.unique().numel()
        4
    """

    def __init__(self, bits: int, symmetric: bool = False, signed: Optional[bool] = None,
                 observer: Optional[Observer] = None, gradient: str = "ste", fused: bool = True):
        super().__init__()
        if gradient not in QF.GRADIENTS:
            raise ValueError(f"gradient must be one of {QF.GRADIENTS}, got {gradient!r}.")
        self.bits = int(bits)
        self.symmetric = symmetric
        self.signed = symmetric if signed is None else signed
        self.qmin, self.qmax = QF.int_range(self.bits, self.signed)
        self.observer = observer if observer is not None else MinMaxObserver()
        self.gradient = gradient
        self.fused = fused
        self.nominal_bits = float(self.bits)

    @property
    def granularity(self) -> str:
        return self.observer.granularity

    def observe(self, x: Tensor, exclude: Optional[Tensor] = None) -> None:
        """Update the range from ``x`` (no gradient), leaving out the rows where ``exclude``."""
        self.observer(x, exclude)

    def qparams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` from the current range, shaped to broadcast against ``x``."""
        obs = self.observer
        if self.symmetric:
            absmax = torch.maximum(obs.min_val.abs(), obs.max_val.abs())
            scale, zero_point = QF.symmetric_qparams(absmax, self.qmin, self.qmax)
        else:
            scale, zero_point = QF.affine_qparams(obs.min_val, obs.max_val, self.qmin, self.qmax)
        return (QF.broadcastable(scale, x, self.granularity),
                QF.broadcastable(zero_point, x, self.granularity))

    def quantize(self, x: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """Fake-quantize with the current range, without observing; ``bias`` (``(C,)`` for
        ``x`` ``(N, C)``) is added after, in the fused kernel's own pass where it runs."""
        if not self.observer.ready:
            return x if bias is None else x + bias
        if self.fused and use_triton(x):
            obs = self.observer
            # The kernel also writes the grid it forms, for code_grid (no second forming),
            # into a buffer kept across calls (no allocation per call); not with a bias,
            # whose output is off the grid.
            grid = None if bias is not None else self._grid_buffer_for(x)
            out = fused_fake_quantize_from_range(x, obs.min_val, obs.max_val, self.qmin, self.qmax,
                                                 self.symmetric, self.granularity, self.gradient,
                                                 grid_out=grid, bias=bias)
            if out is not None:
                self._record(x, self.bits)
                # plain attribute write: nn.Module.__setattr__ costs ~5 us a call
                object.__setattr__(self, "_last_grid",
                                   None if grid is None else (weakref.ref(out), grid))
                return out
        object.__setattr__(self, "_last_grid", None)
        scale, zero_point = self.qparams(x)
        self._record(x, self.bits)
        out = QF.fake_quantize(x, scale, zero_point, self.qmin, self.qmax, self.gradient, self.fused)
        return out if bias is None else out + bias

    def _grid_buffer_for(self, x: Tensor) -> tuple:
        """Two float32 buffers of one value per group of the observer's range, on x's device."""
        numel = self.observer.min_val.numel()
        grid = getattr(self, "_grid_buffer", None)
        if grid is None or grid[0].numel() != numel or grid[0].device != x.device:
            grid = tuple(torch.empty(numel, dtype=torch.float32, device=x.device) for _ in range(2))
            self._grid_buffer = grid
        return grid

    def forward_add(self, x: Tensor, bias: Tensor) -> Tensor:
        """``self(x) + bias``: on CUDA the add runs in the rounding's own pass (a layer's
        bias after its aggregate quantizer, with no pass of its own)."""
        if self.training:
            self.observe(x)
        return self.quantize(x, bias)

    def grid_for_consumer(self, x: Tensor) -> Optional[RangeGrid]:
        """Hand the rounding of ``x`` to the kernel that consumes it (LoRAP's fused head):
        observe ``x`` while training, as :meth:`forward` does, and return the grid to round
        it on. ``None``, with nothing observed, where this quantizer must run itself: not
        per tensor, ``"clipped"`` gradients (the consumer passes gradients straight
        through), ``fused`` off, ``x`` not for Triton, or no range yet at evaluation."""
        if not (self.fused and self.gradient == "ste" and self.granularity == "per_tensor"
                and x.dtype == torch.float32 and use_triton(x)):
            return None
        if self.training:
            self.observe(x)
        if not self.observer.ready:
            return None
        self._record(x, self.bits)
        object.__setattr__(self, "_last_grid", None)
        obs = self.observer
        return RangeGrid.from_range(obs.min_val, obs.max_val, self.qmin, self.qmax,
                                    self.symmetric)

    def code_grid(self, y: Tensor) -> Optional[CodeGrid]:
        """The grid of ``y``. When ``y`` is this quantizer's last fused output, the grid is
        the one its kernel wrote, in a buffer that the next call overwrites (stream-ordered
        on the GPU): use it before calling the quantizer again, as the layers do."""
        if not self.observer.ready or y.dim() != 2:
            return None
        last = getattr(self, "_last_grid", None)
        if last is not None and last[0]() is y:  # y is the fused kernel's output
            scale, zero_point = last[1]
            return CodeGrid(scale, zero_point, self.qmin, self.qmax, self.granularity)
        scale, zero_point = self.qparams(y)
        return CodeGrid(scale.detach().reshape(-1), zero_point.detach().reshape(-1),
                        self.qmin, self.qmax, self.granularity)

    def int_repr(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(codes, scale, zero_point)``: integer codes (int32) for storage, and their grid."""
        scale, zero_point = self.qparams(x)
        codes = QF.quantize(x, scale, zero_point, self.qmin, self.qmax)
        return codes.to(torch.int32), scale, zero_point

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.observe(x)
        return self.quantize(x)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        sign = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, {sign}, gradient={self.gradient}"


class LSQQuantizer(QuantizerBase):
    """Learnable-step quantizer (LSQ, Esser et al. 2020) at a fixed bit width.

    ``q(x) = s * clamp(round(x / s), qmin, qmax)``, zero point 0, with ``s`` a parameter per
    tensor, per row (output channel of a weight) or per column (feature channel of a node
    tensor). The step is initialised from the first tensor seen, per group, as
    ``max|x| / qmax`` (``init="max"``) or as LSQ's ``2 mean|x| / sqrt(qmax)`` (``"lsq"``);
    its gradient is LSQ's, scaled by ``1 / sqrt(numel_per_group * qmax)``; the
    gradient to ``x`` is zero where the value was clamped.

    Step parametrisation (``step_param``):

    - ``"linear"`` (LSQ as published): the parameter ``step`` is ``s`` itself.
    - ``"log"``: the parameter ``log_step`` is ``log s`` (``s = exp(log_step)``, always
      positive). The gradient is the same LSQ gradient times ``s``. Under Adam every
      parameter moves by about ``lr`` per step whatever its gradient's scale, so a linear
      step of size 0.005 (a Cora feature column at 4 bits) moves by 100-200% per step at
      lr 0.01 and crosses zero (a dead, all-zero channel); in the log domain the same
      update is a 1% relative change.

    :meth:`step_size` returns ``s`` (positive, differentiable) in both cases.

    Args:
        bits: bit width (``2**bits`` levels).
        granularity: ``"per_tensor"``, ``"per_row"`` or ``"per_column"``.
        signed: ``True`` / ``False``, or ``None`` to pick unsigned when the first tensor is
            non-negative.
        step_param: ``"linear"`` or ``"log"``.
        init: ``"max"`` or ``"lsq"``, the first step (see above).

    Example::

        >>> import torch
        >>> from qgnn.quant import LSQQuantizer
        >>> q = LSQQuantizer(bits=4, granularity="per_row")
        >>> w = torch.randn(8, 16, requires_grad=True)
        >>> q(w).sum().backward()
        >>> q.step.shape, q.step.grad is not None
        (torch.Size([8]), True)
    """

    _lazy_tensors = ("step", "log_step")

    INITS = ("max", "lsq")

    def __init__(self, bits: int, granularity: str = "per_tensor", signed: Optional[bool] = True,
                 step_param: str = "linear", init: str = "max"):
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}, got {init!r}.")
        self.init = init
        if granularity not in QF.GRANULARITIES:
            raise ValueError(f"granularity must be one of {QF.GRANULARITIES}, got {granularity!r}.")
        if step_param not in STEP_PARAMS:
            raise ValueError(f"step_param must be one of {STEP_PARAMS}, got {step_param!r}.")
        self.bits = int(bits)
        self.granularity = granularity
        self.fixed_sign = signed
        self.step_param = step_param
        self.nominal_bits = float(self.bits)
        # Shape set by the first tensor (in place, so optimizers built earlier still see it).
        _register_step(self, torch.ones(()))
        self.register_buffer("signed", torch.tensor(True if signed is None else signed))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        if self.fixed_sign is None:
            self.signed.fill_(bool(x.min() < 0))
        _, qmax = QF.int_range(self.bits, bool(self.signed))
        dims = QF.reduce_dims(x, self.granularity)
        if self.init == "lsq":
            size = x.detach().abs().mean(dim=dims) * (2.0 / math.sqrt(max(qmax, 1)))
        else:
            size = x.detach().abs().amax(dim=dims) / max(qmax, 1)
        positive = size[size > 0]
        fallback = positive.mean() if positive.numel() else torch.tensor(1.0 / max(qmax, 1))
        _set_step(self, torch.where(size > 0, size, fallback))
        self.initialized.fill_(True)

    def step_size(self) -> Tensor:
        """The step ``s`` (positive, with gradient to the parameter)."""
        return _step_value(self)

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.initialized):
            self._initialize(x)
        qmin, qmax = QF.int_range(self.bits, bool(self.signed))
        raw = _step_parameter(self)
        group = max(x.numel() // max(raw.numel(), 1), 1)
        raw = QF.grad_scale(raw, 1.0 / math.sqrt(group * max(qmax, 1)))
        step = _positive_step(raw, self.step_param)
        step = QF.broadcastable(step, x, self.granularity)
        self._record(x, self.bits)
        return QF.fake_quantize(x, step, 0.0, qmin, qmax, "clipped")

    def code_grid(self, y: Tensor) -> Optional[CodeGrid]:
        if not bool(self.initialized) or y.dim() != 2:
            return None
        qmin, qmax = QF.int_range(self.bits, bool(self.signed))
        step = self.step_size().detach().reshape(-1)
        return CodeGrid(step, torch.zeros_like(step), int(qmin), int(qmax), self.granularity)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity}, step_param={self.step_param}, "
                f"init={self.init}")


STEP_PARAMS = ("linear", "log")


def _register_step(module: nn.Module, init: Tensor) -> None:
    """Register the step parameter: ``step`` (linear) or ``log_step`` (log domain)."""
    if module.step_param == "log":
        module.log_step = nn.Parameter(init.log())
    else:
        module.step = nn.Parameter(init)


def _step_parameter(module: nn.Module) -> nn.Parameter:
    return module.log_step if module.step_param == "log" else module.step


@torch.no_grad()
def _set_step(module: nn.Module, value: Tensor) -> None:
    """Set the step to ``value`` (positive), replacing the parameter's data in place."""
    param = _step_parameter(module)
    value = value.clamp_min(QF.MIN_SCALE).to(param.dtype)
    param.data = (value.log() if module.step_param == "log" else value).clone()


def _positive_step(raw: Tensor, step_param: str) -> Tensor:
    if step_param == "log":
        return raw.exp().clamp_min(QF.MIN_SCALE)
    # |s|: a linear step that an optimizer pushed below zero keeps working (and learning)
    # as its mirror image instead of freezing at the clamp with zero gradient.
    return raw.abs().clamp_min(QF.MIN_SCALE)


def _step_value(module: nn.Module) -> Tensor:
    return _positive_step(_step_parameter(module), module.step_param)


def round_bits(bits: Tensor, min_bits: int, max_bits: int) -> Tensor:
    """Integer bit widths from a learnable float: ``round(clamp(b, min, max))`` with an STE."""
    return QF.round_ste(bits.clamp(min_bits, max_bits))


class NodeWiseQuantizer(QuantizerBase):
    """A2Q's node-wise quantizer: learnable step ``s_i`` and bit width ``b_i`` per node.

    ``q(x_i) = s_i * clamp(round(x_i / s_i), qmin(b_i), qmax(b_i))`` with
    ``b_i = round(clamp(b, min_bits, max_bits))`` (STE) and a symmetric grid, signed unless
    the first tensor is non-negative.

    Two ways to get ``(s_i, b_i)``:

    - ``mode="per_node"``: parameters ``step``, ``bits`` of shape ``(N,)`` for a fixed node
      set (transductive node tasks); ``N`` is set by the first tensor.
    - ``mode="bank"``: ``bank_size`` rows ``bank_step``, ``bank_bits``; node ``i`` uses the
      row whose ``s * qmax(b)`` is nearest to ``max_f |x_if|`` (graph tasks, unseen nodes);
      gradients reach the chosen rows through the gather. The bank's ranges are initialised
      to the quantiles of the first batch's per-node maxima.

    Local gradient: ``s`` and ``b`` do not receive the task loss's gradient; they are
    trained by the gradient of each node's own quantization error
    ``E_i = sum_f (x_if - q(x_if))**2``, injected into the same backward pass. The input
    ``x`` receives the task gradient through a clipped STE. After a training forward,
    ``node_bits`` holds the ``(N,)`` rounded bits with their STE gradient, from which A2Q's
    memory penalty is computed.

    Args:
        mode: ``"per_node"`` or ``"bank"``.
        init_bits: starting bit width (A2Q: 4).
        min_bits, max_bits: range of the learnable bit width.
        bank_size: rows in the bank (``mode="bank"``).
        step_param: ``"linear"`` (parameter ``step``) or ``"log"`` (parameter ``log_step``),
            as for :class:`LSQQuantizer`.

    Shapes: ``x`` ``(N, *F)`` -> ``(N, *F)``.

    Example::

        >>> import torch
        >>> from qgnn.quant import NodeWiseQuantizer
        >>> q = NodeWiseQuantizer(mode="per_node")
        >>> x = torch.randn(5, 3, requires_grad=True)
        >>> q(x).sum().backward()
        >>> q.step.shape, q.bits.shape, q.node_bits.tolist()
        (torch.Size([5]), torch.Size([5]), [4.0, 4.0, 4.0, 4.0, 4.0])
    """

    MODES = ("per_node", "bank")
    _lazy_tensors = ("step", "log_step", "bits")

    def __init__(self, mode: str = "per_node", init_bits: float = 4.0, min_bits: int = 1,
                 max_bits: int = 8, bank_size: int = 1000, step_param: str = "linear"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}.")
        if step_param not in STEP_PARAMS:
            raise ValueError(f"step_param must be one of {STEP_PARAMS}, got {step_param!r}.")
        self.step_param = step_param
        if not min_bits <= init_bits <= max_bits:
            raise ValueError(f"init_bits={init_bits} is outside [{min_bits}, {max_bits}].")
        self.mode = mode
        self.init_bits = float(init_bits)
        self.min_bits = int(min_bits)
        self.max_bits = int(max_bits)
        self.nominal_bits = float(round(init_bits))
        rows = bank_size if mode == "bank" else 0
        _register_step(self, torch.ones(rows))
        self.bits = nn.Parameter(torch.full((rows,), self.init_bits))
        self.register_buffer("signed", torch.tensor(True))
        self.register_buffer("initialized", torch.tensor(False))
        self.node_bits: Optional[Tensor] = None  # last forward's (N,) rounded bits, with grad

    # ------------------------------------------------------------------ (s, b) lookup
    def _qmax_of(self, bits: Tensor) -> Tensor:
        return QF.int_range(bits, bool(self.signed))[1]

    def row_ranges(self) -> Tensor:
        """``(R,)`` largest representable value ``s * qmax(round(b))`` of each bank row."""
        b = self.bits.detach().clamp(self.min_bits, self.max_bits).round()
        return self.step_size().detach() * self._qmax_of(b)

    def nearest_rows(self, node_absmax: Tensor) -> Tensor:
        """``(N,)`` index of the bank row whose range is nearest to each node's ``max|x|``."""
        ranges = self.row_ranges()
        ordered, order = torch.sort(ranges)
        right = torch.searchsorted(ordered, node_absmax.contiguous()).clamp(max=ordered.numel() - 1)
        left = (right - 1).clamp(min=0)
        pick_left = (node_absmax - ordered[left]).abs() <= (ordered[right] - node_absmax).abs()
        return order[torch.where(pick_left, left, right)]

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        flat = x.detach().reshape(x.shape[0], -1)
        self.signed.fill_(bool(flat.min() < 0))
        node_absmax = flat.abs().amax(1)
        qmax = float(self._qmax_of(torch.tensor(round(self.init_bits), dtype=torch.float)))
        positive = node_absmax[node_absmax > 0]
        fallback = positive.median() if positive.numel() else torch.tensor(1.0)
        if self.mode == "per_node":
            absmax = torch.where(node_absmax > 0, node_absmax, fallback)
            rows = absmax.numel()
        else:
            source = positive if positive.numel() else fallback.reshape(1)
            rows = _step_parameter(self).numel()
            levels = (torch.arange(rows, dtype=torch.float) + 0.5) / rows
            absmax = torch.quantile(source.float().cpu(), levels).to(x.device)
        _set_step(self, (absmax / max(qmax, 1.0)).to(x.dtype))
        self.bits.data = torch.full((rows,), self.init_bits, dtype=x.dtype, device=x.device)
        self.initialized.fill_(True)

    def step_size(self) -> Tensor:
        """``(R,)`` steps ``s`` (positive, with gradient to the parameter)."""
        return _step_value(self)

    def node_params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, b)`` per row of ``x``, each ``(N,)``, differentiable w.r.t. the parameters."""
        step = self.step_size()
        if self.mode == "per_node":
            if x.shape[0] != step.numel():
                raise ValueError(
                    f"this per-node quantizer holds {step.numel()} nodes but got a tensor "
                    f"with {x.shape[0]} rows; per-node A2Q needs the same node set every pass "
                    "(use the bank mode for graph-level or inductive tasks)."
                )
            return step, self.bits
        index = self.nearest_rows(x.detach().reshape(x.shape[0], -1).abs().amax(1))
        return step.index_select(0, index), self.bits.index_select(0, index)

    # ------------------------------------------------------------------ forward
    def _fake_quantize(self, x: Tensor, step: Tensor, bits: Tensor) -> Tensor:
        qmin, qmax = QF.int_range(bits, bool(self.signed))
        shape = (-1,) + (1,) * (x.dim() - 1)
        step = step.abs().clamp_min(QF.MIN_SCALE).reshape(shape)
        return QF.fake_quantize(x, step, 0.0, qmin.reshape(shape), qmax.reshape(shape), "clipped")

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.initialized):
            self._initialize(x)
        step, bits = self.node_params(x)
        node_bits = round_bits(bits, self.min_bits, self.max_bits)
        if self.training and torch.is_grad_enabled():
            # x gets the task gradient (clipped STE); s and b get only the gradient of each
            # node's own error sum_f (x_if - q(x_if))**2, in one fused pass over x.
            qmin, qmax = QF.int_range(node_bits, bool(self.signed))
            y = QF.fake_quantize_local(x, step.abs().clamp_min(QF.MIN_SCALE), qmin, qmax)
            self.node_bits = node_bits
        else:
            y = self._fake_quantize(x, step.detach(), node_bits.detach())
            self.node_bits = node_bits.detach()
        self._record(x, node_bits.detach().mean())
        return y

    def extra_repr(self) -> str:
        size = f", bank_size={self.bits.numel()}" if self.mode == "bank" else ""
        return (f"mode={self.mode}, init_bits={self.init_bits}, bits in [{self.min_bits}, "
                f"{self.max_bits}]{size}, step_param={self.step_param}")


class MaskedQuantizer(QuantizerBase):
    """Degree-Quant's protective masking around a :class:`FakeQuantize`.

    While training, rows whose node (or, for edge tensors, source node) is in the context's
    protective mask pass in full precision; the others are fake-quantized. The inner
    quantizer's observer sees only the quantized rows and ``protected_observer`` only the
    protected ones, so the high-degree nodes that are kept in full precision do not widen
    the low-precision range. At evaluation nothing is masked.

    Args:
        quantizer: the rounding path (a :class:`FakeQuantize`).
        context: the :class:`~qgnn.quant.context.QuantContext` shared by the model.
        kind: the site kind, ``"node"`` or ``"edge"``.

    Shapes: ``x`` ``(N, *F)`` (node) or ``(E, *H)`` (edge) -> same.

    Example::

        >>> import torch
        >>> from qgnn.quant import FakeQuantize, MaskedQuantizer, QuantContext
        >>> ctx = QuantContext()
        >>> q = MaskedQuantizer(FakeQuantize(bits=2, gradient="clipped"), ctx, "node")
        >>> ctx.set_mask(torch.tensor([True, False, False]))
        >>> x = torch.tensor([[0.3], [0.3], [0.9]])
        >>> q(x)[0].item()                     # protected row: unchanged
        0.30000001192092896
    """

    def __init__(self, quantizer: FakeQuantize, context: QuantContext, kind: str):
        super().__init__()
        if kind not in ("node", "edge"):
            raise ValueError(f"masking applies to 'node' or 'edge' sites, got {kind!r}.")
        self.quantizer = quantizer
        self.protected_observer = type(quantizer.observer)(**_observer_args(quantizer.observer))
        self.context = context
        self.kind = kind
        self.nominal_bits = quantizer.nominal_bits

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    def forward(self, x: Tensor) -> Tensor:
        mask = self.context.mask_for(self.kind, x.shape[0]) if self.training else None
        # some rows may have passed in float (plain attribute write, as FakeQuantize's)
        object.__setattr__(self, "_protected_rows", mask is not None)
        if mask is None:
            out = self.quantizer(x)
        else:
            mask = mask.to(x.device)
            self.quantizer.observe(x, exclude=mask)
            self.protected_observer(x, exclude=~mask)
            out = torch.where(mask.reshape((-1,) + (1,) * (x.dim() - 1)), x, self.quantizer.quantize(x))
        self._record(x, self.quantizer.bits)
        return out

    def code_grid(self, y: Tensor) -> Optional[CodeGrid]:
        if getattr(self, "_protected_rows", True):
            return None
        return self.quantizer.code_grid(y)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


def _observer_args(observer: Observer) -> dict:
    """Constructor arguments that rebuild an observer of the same configuration."""
    names = {"momentum", "granularity", "q", "sample_size"}
    params = inspect.signature(type(observer).__init__).parameters
    return {k: getattr(observer, k) for k in params if k in names}


class MixedQuantizer(QuantizerBase):
    """MixQ's relaxed choice among candidate bit widths for one component.

    Searching: ``y = sum_k softmax(logits)_k * q_k(x)`` over one quantizer per candidate
    width; ``expected_bits = sum_k softmax(logits)_k * bits_k`` (with gradient to the
    logits) feeds the memory term of the loss. After :meth:`select`, only the most likely
    candidate runs (buffer ``selected``), so the model is an ordinary fixed-width model.

    Args:
        candidates: quantizers, one per width (each with a ``bits`` attribute).
        logit_init: ``"bits"`` (default), the MixQ reference code's start
            ``logits = softmax(softmax(bits))``: a mild tilt towards the widest candidate
            (weights 0.29 / 0.29 / 0.42 for {2, 4, 8}), so a component whose logits the
            search barely moves keeps the widest width instead of whichever way noise
            tipped it; or ``"uniform"`` (logits 0: equal weights).

    Example::

        >>> import torch
        >>> from qgnn.quant import FakeQuantize, MixedQuantizer
        >>> q = MixedQuantizer([FakeQuantize(bits=b) for b in (2, 4, 8)])
        >>> [round(p, 3) for p in q.probabilities().tolist()]   # tilted towards 8 bits
        [0.292, 0.293, 0.416]
        >>> y = q(torch.randn(10, 4))
        >>> round(q.expected_bits.item(), 3)
        5.08
        >>> q.select()                          # most likely width (ties: the first)
        8
        >>> MixedQuantizer([FakeQuantize(bits=b) for b in (2, 4, 8)], logit_init="uniform").select()
        2
    """

    LOGIT_INITS = ("uniform", "bits")

    def __init__(self, candidates: Sequence[nn.Module], logit_init: str = "bits"):
        super().__init__()
        if not candidates:
            raise ValueError("MixedQuantizer needs at least one candidate.")
        if logit_init not in self.LOGIT_INITS:
            raise ValueError(f"logit_init must be one of {self.LOGIT_INITS}, got {logit_init!r}.")
        self.candidates = nn.ModuleList(candidates)
        self.candidate_bits = tuple(int(c.bits) for c in candidates)
        bits = torch.tensor(self.candidate_bits, dtype=torch.float)
        start = bits.softmax(0).softmax(0) if logit_init == "bits" else torch.zeros_like(bits)
        self.logits = nn.Parameter(start)
        self.register_buffer("selected", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("bits_table", torch.tensor(self.candidate_bits, dtype=torch.float))
        self.expected_bits: Optional[Tensor] = None  # last search forward, with grad
        self.nominal_bits = float(max(self.candidate_bits))

    @property
    def searching(self) -> bool:
        return int(self.selected) < 0

    @property
    def selected_bits(self) -> Optional[int]:
        return None if self.searching else self.candidate_bits[int(self.selected)]

    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits, 0)

    @torch.no_grad()
    def select(self) -> int:
        """Keep the most likely width from now on; returns its bits."""
        self.selected.fill_(int(self.logits.argmax()))
        return self.selected_bits

    def forward(self, x: Tensor) -> Tensor:
        if not self.searching:
            out = self.candidates[int(self.selected)](x)
            self.expected_bits = None
            self._record(x, self.selected_bits)
            return out
        weights = self.probabilities()
        out = sum(w * q(x) for w, q in zip(weights, self.candidates))
        self.expected_bits = (weights * self.bits_table).sum()
        self._record(x, self.expected_bits.detach())
        return out

    def code_grid(self, y: Tensor) -> Optional[CodeGrid]:
        if self.searching:
            return None  # a mixture of grids
        return self.candidates[int(self.selected)].code_grid(y)

    def extra_repr(self) -> str:
        state = "searching" if self.searching else f"selected={self.selected_bits}"
        return f"candidate_bits={self.candidate_bits}, {state}"
