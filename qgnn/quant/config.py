"""Quantization settings: one dataclass per framework, gathered in :class:`QuantConfig`.

Defaults follow DESIGN §3. ``None`` means "the framework's default for these bits", resolved
by the ``resolved_*`` methods. :meth:`QuantConfig.from_dict` builds and validates a config
from the ``quant:`` section of a YAML file; every mistake raises
:class:`~qgnn.errors.ConfigError` naming the key and the allowed values.

Example::

    >>> from qgnn.quant.config import QuantConfig
    >>> cfg = QuantConfig.from_dict({"method": "dq", "weight_bits": 4, "act_bits": 4})
    >>> cfg.dq_protection()
    (0.1, 0.1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from qgnn.errors import ConfigError

METHODS = ("fp32", "qat", "dq", "a2q", "mixq")
MIXQ_LOGIT_INITS = ("uniform", "bits")
A2Q_POST_AGGREGATION = ("per_channel", "per_node")
EDGE_MASKS = ("source", "none")
DQ_INPUT_RANGES = ("percentile", "minmax")
STEP_PARAMS = ("linear", "log")
STEP_INITS = ("max", "lsq")
A2Q_NODE_MODES = ("auto", "per_node", "bank")
MIXQ_BASES = ("qat", "dq")
MAX_BITS = 16


@dataclass
class QATOptions:
    """Vanilla QAT. ``momentum``: weight of each batch in the running min/max.

    DESIGN's 0.01 assumes many optimizer steps per epoch. Full-batch node classification
    takes one step (one observation) per epoch, so at 0.01 the ranges stay near their
    first-epoch values for the whole run while the weights and activations grow (Cora GCN
    W8A8: 67% test at 0.01, 82.5% at 0.1); the shipped full-batch configs set 0.1.
    """

    momentum: float = 0.01


@dataclass
class DQOptions:
    """Degree-Quant.

    Attributes:
        p_low, change: ``p_i = p_low + change * CDF(in_degree_i)``; ``None`` gives
            (0, 0.1) at 8 or more activation bits and (0.1, 0.1) below.
        percentile: tail fraction clipped from each side of the activation range; ``None``
            gives 0.001 (0.1%) at 8 or more bits, 0.01 (1%) below.
        sample_size: tensors larger than this are summarised by a random sample.
        momentum: running average of the percentile ranges.
        edge_mask: ``"source"``: edge tensors take their source node's mask;
            ``"none"``: edge tensors are always quantized.
        input_range: range rule of the model's raw input (the first layer's ``input``
            site): ``"percentile"`` as every other activation (DESIGN), or ``"minmax"``
            (momentum min/max, as vanilla QAT). Sparse inputs need ``"minmax"``: Cora's
            row-normalised bag of words is 98.7% zeros, so its 99th percentile is 0 and
            the 1%/99% range clips every informative entry (Cora GCN DQ W4A4: 13-32% test).
    """

    p_low: Optional[float] = None
    change: Optional[float] = None
    percentile: Optional[float] = None
    sample_size: int = 65536
    momentum: float = 0.01
    edge_mask: str = "source"
    input_range: str = "percentile"


@dataclass
class A2QOptions:
    """A2Q.

    Attributes:
        init_bits: starting bit width of the node features (``None``: ``act_bits`` or 4).
        min_bits, max_bits: range of the learnable bit widths.
        penalty: ``a`` in ``a * relu(M - M_target)**2`` (M in KB).
        memory_target_kb: ``M_target``; ``None`` derives it from ``target_bits``.
        target_bits: ``M_target`` = the feature memory at this average bit width; ``None``:
            the starting width (so W8 runs are held near 8 bits and W4 runs near 4).
        bank_size: rows of the (step, bits) bank used for unseen nodes.
        node_mode: ``"per_node"`` (fixed node set), ``"bank"`` (graph tasks) or ``"auto"``
            (bank for a :class:`~qgnn.nn.GraphPredictor`, per node otherwise).
        step_param: ``"log"`` (learn ``log s``) or ``"linear"`` (learn ``s``, as LSQ is
            published). Adam moves every parameter by about ``lr`` per step; Cora's
            feature-channel steps start near 0.005, so at lr 0.01 linear steps cross zero in
            the first update and their channels die (Cora GCN A2Q W4: 32-43% test). In the
            log domain the same update is a 1% relative change.
        step_init: first step of the fixed-width (LSQ) quantizers of weights and linear
            outputs: ``"max"`` (``max|x| / qmax`` per channel: nothing clipped at the start)
            or ``"lsq"`` (LSQ's published ``2 mean|x| / sqrt(qmax)``, which starts clipped
            where a channel is heavy-tailed).
        channel_lr: learning rate of those per-channel steps (``None``: ``quant.lr``, like
            the node features' steps and bits). A2Q's reference code gives them their own,
            lower rates (GIN on Cora / CiteSeer: 0.005 against 0.05 for the feature steps).
        post_aggregation: quantizers of linear outputs computed after the aggregation (GIN's
            MLP ``hidden`` and ``output`` sites): ``"per_channel"`` (fixed-width steps per
            channel, like the other linear outputs) or ``"per_node"`` (node-wise steps and
            bits like the node features, counted in the memory term).
    """

    init_bits: Optional[float] = None
    min_bits: int = 1
    max_bits: int = 8
    penalty: float = 1e-4
    memory_target_kb: Optional[float] = None
    target_bits: Optional[float] = None
    bank_size: int = 1000
    node_mode: str = "auto"
    step_param: str = "log"
    step_init: str = "max"
    channel_lr: Optional[float] = None
    post_aggregation: str = "per_channel"


@dataclass
class MixQOptions:
    """MixQ.

    Attributes:
        bits: candidate widths of every component. When ``quant.weight_bits`` /
            ``quant.act_bits`` are set they cap the candidates of weights / activations
            (W4A4 with bits (2, 4, 8) searches {2, 4}), so one sweep ``--set`` of the bits
            means the same for every method.
        memory_weight: ``lambda`` in ``loss + lambda * expected memory (KB)``.
        search_epochs: epochs of relaxed search before the widths are fixed.
        base: parts used for each candidate and for retraining: ``"qat"`` or ``"dq"``;
            the base's own section (``quant.qat`` or ``quant.dq``) sets its options.
        reinit: re-initialise the model's weights when the widths are fixed.
        logit_lr: learning rate of the plain-SGD update of the width logits (outside the
            model's optimizer: Adam's per-parameter normalisation would push a tiny
            component as hard as a large one and make ``memory_weight`` meaningless).
        logit_init: start of the width logits: ``"uniform"`` or ``"bits"`` (the MixQ
            reference code's ``softmax(softmax(bits))``, tilted towards the widest width;
            see :class:`~qgnn.quant.quantizers.MixedQuantizer`).
    """

    bits: tuple = (2, 4, 8)
    memory_weight: float = 1e-4
    search_epochs: int = 50
    base: str = "qat"
    reinit: bool = False
    logit_lr: float = 1.0
    logit_init: str = "bits"


@dataclass
class QuantConfig:
    """Which framework and bits; per-framework options in their own sections.

    Attributes:
        method: ``"fp32"``, ``"qat"``, ``"dq"``, ``"a2q"`` or ``"mixq"``.
        weight_bits: weight bits (``None``: 8, or 4 for A2Q, whose weights and linear
            outputs use a fixed width). Ignored by fp32 and MixQ (which searches).
        act_bits: activation bits (``None``: 8; A2Q's starting width 4).
        lr: learning rate of the quantizers' own parameters (learned steps and bit widths of
            A2Q; ``None``: ``train.lr``). Adam moves every parameter by about its learning
            rate per step whatever the gradient's scale, so LSQ's gradient scaling does not
            slow the steps down; A2Q's reference code gives them their own rates too.
        low_bit_gather: where a layer aggregates a quantizer's output on the Triton path
            (CUDA), gather it as packed 8/4/2-bit codes instead of float32 (the same sums,
            ``32 / bits`` times fewer bytes per edge); ``false`` gathers the float copy.
        fused_fake_quant: on CUDA, observer-range quantizers (QAT, DQ, MixQ) round in one
            Triton pass instead of 6-8 torch ops (the same results); ``false`` keeps the ops.
    """

    method: str = "fp32"
    weight_bits: Optional[int] = None
    act_bits: Optional[int] = None
    lr: Optional[float] = None
    low_bit_gather: bool = True
    fused_fake_quant: bool = True
    qat: QATOptions = field(default_factory=QATOptions)
    dq: DQOptions = field(default_factory=DQOptions)
    a2q: A2QOptions = field(default_factory=A2QOptions)
    mixq: MixQOptions = field(default_factory=MixQOptions)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ resolved values
    def resolved_weight_bits(self) -> int:
        if self.weight_bits is not None:
            return self.weight_bits
        return 4 if self.method == "a2q" else 8

    def resolved_act_bits(self) -> int:
        if self.act_bits is not None:
            return self.act_bits
        return 4 if self.method == "a2q" else 8

    def dq_protection(self, bits: Optional[int] = None) -> tuple[float, float]:
        """``(p_low, change)`` for activations of ``bits`` (default ``act_bits``)."""
        bits = self.resolved_act_bits() if bits is None else bits
        p_low, change = (0.0, 0.1) if bits >= 8 else (0.1, 0.1)
        return (p_low if self.dq.p_low is None else self.dq.p_low,
                change if self.dq.change is None else self.dq.change)

    def dq_percentile(self, bits: Optional[int] = None) -> float:
        bits = self.resolved_act_bits() if bits is None else bits
        if self.dq.percentile is not None:
            return self.dq.percentile
        return 0.001 if bits >= 8 else 0.01

    def a2q_init_bits(self) -> float:
        if self.a2q.init_bits is not None:
            return float(self.a2q.init_bits)
        return float(self.resolved_act_bits())

    def a2q_target_bits(self) -> float:
        if self.a2q.target_bits is not None:
            return float(self.a2q.target_bits)
        return self.a2q_init_bits()

    def mixq_candidates(self, kind: str) -> tuple:
        """Candidate widths of a ``"weight"`` or activation component, capped by the bits."""
        cap = self.weight_bits if kind == "weight" else self.act_bits
        if cap is None:
            return tuple(self.mixq.bits)
        return tuple(b for b in self.mixq.bits if b <= cap)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _choice("quant.method", self.method, METHODS)
        for key in ("weight_bits", "act_bits"):
            value = getattr(self, key)
            if value is not None:
                _int_in(f"quant.{key}", value, 1, MAX_BITS)
        if self.lr is not None:
            _number_in("quant.lr", self.lr, 0.0, None, low_open=True)
        _number_in("quant.qat.momentum", self.qat.momentum, 0.0, 1.0, low_open=True)

        dq = self.dq
        for key in ("p_low", "change"):
            if getattr(dq, key) is not None:
                _number_in(f"quant.dq.{key}", getattr(dq, key), 0.0, 1.0)
        p_low, change = self.dq_protection()
        if p_low + change > 1.0:
            raise ConfigError(
                f"quant.dq.p_low + quant.dq.change = {p_low + change} exceeds 1; the "
                "protection probability p_low + change * CDF(degree) must stay in [0, 1]."
            )
        if dq.percentile is not None:
            _number_in("quant.dq.percentile", dq.percentile, 0.0, 0.5, high_open=True)
        _int_in("quant.dq.sample_size", dq.sample_size, 1, None)
        _number_in("quant.dq.momentum", dq.momentum, 0.0, 1.0, low_open=True)
        _choice("quant.dq.edge_mask", dq.edge_mask, EDGE_MASKS)
        _choice("quant.dq.input_range", dq.input_range, DQ_INPUT_RANGES)

        a2q = self.a2q
        _int_in("quant.a2q.min_bits", a2q.min_bits, 1, MAX_BITS)
        _int_in("quant.a2q.max_bits", a2q.max_bits, a2q.min_bits, MAX_BITS)
        if a2q.init_bits is not None:
            _number_in("quant.a2q.init_bits", a2q.init_bits, a2q.min_bits, a2q.max_bits)
        elif self.method == "a2q":
            _number_in("quant.act_bits (A2Q's starting width)", self.a2q_init_bits(),
                       a2q.min_bits, a2q.max_bits)
        _number_in("quant.a2q.penalty", a2q.penalty, 0.0, None)
        if a2q.memory_target_kb is not None:
            _number_in("quant.a2q.memory_target_kb", a2q.memory_target_kb, 0.0, None)
        if a2q.target_bits is not None:
            _number_in("quant.a2q.target_bits", a2q.target_bits, 0.0, MAX_BITS)
        _int_in("quant.a2q.bank_size", a2q.bank_size, 1, None)
        _choice("quant.a2q.node_mode", a2q.node_mode, A2Q_NODE_MODES)
        _choice("quant.a2q.step_param", a2q.step_param, STEP_PARAMS)
        _choice("quant.a2q.step_init", a2q.step_init, STEP_INITS)
        _choice("quant.a2q.post_aggregation", a2q.post_aggregation, A2Q_POST_AGGREGATION)
        if a2q.channel_lr is not None:
            _number_in("quant.a2q.channel_lr", a2q.channel_lr, 0.0, None)

        mixq = self.mixq
        if isinstance(mixq.bits, list):
            mixq.bits = tuple(mixq.bits)
        if not isinstance(mixq.bits, tuple) or not mixq.bits:
            raise ConfigError(
                f"quant.mixq.bits must be a non-empty list of bit widths, got {mixq.bits!r}."
            )
        for b in mixq.bits:
            _int_in("quant.mixq.bits[]", b, 1, MAX_BITS)
        if len(set(mixq.bits)) != len(mixq.bits):
            raise ConfigError(f"quant.mixq.bits has repeated widths: {list(mixq.bits)}.")
        _number_in("quant.mixq.memory_weight", mixq.memory_weight, 0.0, None)
        _int_in("quant.mixq.search_epochs", mixq.search_epochs, 0, None)
        _number_in("quant.mixq.logit_lr", mixq.logit_lr, 0.0, None)
        _choice("quant.mixq.base", mixq.base, MIXQ_BASES)
        _choice("quant.mixq.logit_init", mixq.logit_init, MIXQ_LOGIT_INITS)
        if self.method == "mixq":
            for kind, key in (("weight", "weight_bits"), ("act", "act_bits")):
                if not self.mixq_candidates(kind):
                    raise ConfigError(
                        f"quant.{key} = {getattr(self, key)} is below every MixQ candidate "
                        f"width {list(mixq.bits)}; MixQ searches the candidates up to the bits."
                    )
        if not isinstance(mixq.reinit, bool):
            raise ConfigError(f"quant.mixq.reinit must be true or false, got {mixq.reinit!r}.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], prefix: str = "quant") -> "QuantConfig":
        """Build from a mapping (a YAML section); unknown keys and misplaced sections fail.

        A per-method section (``qat``, ``dq``, ``a2q``, ``mixq``) is accepted only for the
        chosen method (and for MixQ also its base's section, ``qat`` or ``dq``).
        """
        data = dict(data or {})
        sections = {"qat": QATOptions, "dq": DQOptions, "a2q": A2QOptions, "mixq": MixQOptions}
        top = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(top))
        if unknown:
            raise ConfigError(f"unknown key {prefix}.{unknown[0]}; allowed keys: {', '.join(top)}.")
        method = data.get("method", "fp32")
        _choice(f"{prefix}.method", method, METHODS)
        base = (data.get("mixq") or {}).get("base", "qat") if isinstance(data.get("mixq"), Mapping) else "qat"
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in sections:
                kwargs[key] = value
                continue
            used = key == method or (method == "mixq" and key == base)
            if not used:
                raise ConfigError(
                    f"{prefix}.{key} is set but {prefix}.method is {method!r}; remove the "
                    f"section or set {prefix}.method: {key}."
                )
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}.{key} must be a mapping of options, got {value!r}.")
            allowed = [f.name for f in dataclasses.fields(sections[key])]
            bad = sorted(set(value) - set(allowed))
            if bad:
                raise ConfigError(
                    f"unknown key {prefix}.{key}.{bad[0]}; allowed keys: {', '.join(allowed)}."
                )
            kwargs[key] = sections[key](**value)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Plain dict with the sections in use (for checkpoints and logs); ``from_dict`` reads it."""
        full = dataclasses.asdict(self)
        full["mixq"]["bits"] = list(self.mixq.bits)
        used = {self.method}
        if self.method == "mixq":
            used.add(self.mixq.base)
        return {k: v for k, v in full.items()
                if k not in ("qat", "dq", "a2q", "mixq") or k in used}


# --------------------------------------------------------------------------- checks
def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}.")


def _int_in(key: str, value, low: int, high: Optional[int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{key} must be in {span}, got {value}.")


def _number_in(key: str, value, low: float, high: Optional[float],
               low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{low}, {high}{right}" if high is not None else f"{'>' if low_open else '>='} {low}"
        raise ConfigError(f"{key} must be in {span}, got {value}.")
