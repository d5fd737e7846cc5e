"""The API every QAT framework offers the trainer, and the fp32 framework.

A framework is a choice of quantizer parts per site kind (``make_quantizer``) plus the
extras its method needs (a loss penalty, epoch hooks). The trainer calls::

    framework = build_quantization(cfg)               # cfg: QuantConfig
    framework.attach(model, example=(graph, x))       # install quantizers (before the optimizer)
    optimizer = ...(model.parameters())
    for epoch in range(epochs):
        loss = task_loss(model(graph, x)) + framework.penalty(model)
        loss.backward(); optimizer.step()
        if framework.on_epoch_end(model, epoch):      # True: parameters changed roles
            optimizer = ...(model.parameters())       # rebuild (MixQ after its search)
    report = size_report(model)

To load a checkpoint: build the model, ``framework.attach(model)``, then
``model.load_state_dict(torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn

from qgnn.quant.config import QuantConfig
from qgnn.quant.context import QuantContext
from qgnn.quant.quantizers import FakeQuantize, QuantizerBase

Tensor = torch.Tensor


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every submodule (``model`` included) with quantization sites."""
    return [
        (name, module) for name, module in model.named_modules()
        if isinstance(getattr(module, "QUANT_SITES", None), dict) and isinstance(
            getattr(module, "quant", None), nn.ModuleDict)
    ]


def quantizer_modules(model: nn.Module) -> Iterator[tuple[str, QuantizerBase]]:
    """``(name, quantizer)`` of every quantizer installed in the model (outermost only)."""
    for layer_name, layer in quantizable_layers(model):
        for site, module in layer.quant.items():
            if isinstance(module, QuantizerBase):
                prefix = f"{layer_name}.quant.{site}" if layer_name else f"quant.{site}"
                yield prefix, module


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters owned by quantizers (steps, bit widths, MixQ logits).

    Lets a trainer put them in their own optimizer group (e.g. without weight decay)
    without matching parameter names.
    """
    seen: dict[int, nn.Parameter] = {}
    for _, quantizer in quantizer_modules(model):
        for p in quantizer.parameters():
            seen[id(p)] = p
    return list(seen.values())


def model_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's own parameters: everything but :func:`quantizer_parameters`."""
    owned = {id(p) for p in quantizer_parameters(model)}
    return [p for p in model.parameters() if id(p) not in owned]


class QuantFramework:
    """Base class and the ``fp32`` framework (every site stays an identity).

    Subclasses override :meth:`make_quantizer` and, where their method needs it,
    :meth:`penalty`, :meth:`on_epoch_end`, :meth:`phase` and :meth:`summary`.

    Attributes:
        cfg: the :class:`QuantConfig`.
        context: the :class:`QuantContext` its quantizers read (graph, protective mask).
    """

    method = "fp32"

    def __init__(self, cfg: Optional[QuantConfig] = None):
        self.cfg = cfg if cfg is not None else QuantConfig(method=self.method)
        self.cfg.validate()
        self.context = QuantContext()
        self._hooks: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.input_layer: Optional[nn.Module] = None  # first quantizable layer of the model
        self.output_layer: Optional[nn.Module] = None  # last quantizable layer

    # ------------------------------------------------------------------ parts
    def make_quantizer(self, layer: nn.Module, site: str, kind: str) -> nn.Module:
        """The module for ``layer.quant[site]``; ``kind`` is ``"node"``, ``"edge"`` or ``"weight"``."""
        return nn.Identity()

    # ------------------------------------------------------------------ attach
    def attach(self, model: nn.Module, example: Optional[tuple] = None) -> nn.Module:
        """Install quantizers into every quantizable layer of ``model`` (in place).

        Also registers a forward pre-hook on ``model`` that hands each call's graph (its
        first argument, or ``graph=``) to :attr:`context`. Call before building the
        optimizer. ``example = (graph, x)`` runs one forward pass in eval mode without
        gradients so that data-shaped parameters (A2Q's per-node and per-channel steps)
        exist and are initialised from data before the optimizer is built; without it they
        take their shape at the first forward pass (in place, so an optimizer built
        earlier still holds them, before its first step).

        Returns ``model``.
        """
        layers = quantizable_layers(model)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no quantizable layers (modules with QUANT_SITES)."
            )
        for name, layer in layers:
            taken = [s for s, m in layer.quant.items() if not isinstance(m, nn.Identity)]
            if taken:
                raise ValueError(
                    f"layer {name or type(layer).__name__} already has quantizers at {taken}; "
                    "attach a framework to a fresh model (or call detach first)."
                )
        self.input_layer = layers[0][1]
        self.output_layer = layers[-1][1]
        for _, layer in layers:
            for site, kind in layer.QUANT_SITES.items():
                layer.quant[site] = self.make_quantizer(layer, site, kind)
        for module in model.modules():
            if isinstance(module, FakeQuantize):
                module.fused = self.cfg.fused_fake_quant
        self._hooks[id(model)] = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        self.after_attach(model)
        if example is not None:
            self.initialize(model, *example)
        return model

    def is_model_input(self, layer: nn.Module, site: str) -> bool:
        """Whether ``layer.quant[site]`` sees the model's raw input (the first layer's input).

        Valid during :meth:`attach` (and after it). For a model with its own encoder before
        the first quantizable layer this is the encoder's output.
        """
        return site == "input" and layer is self.input_layer

    def is_model_output(self, layer: nn.Module, site: str) -> bool:
        """Whether ``layer.quant[site]`` is the last layer's output (a node model's logits)."""
        return site == "output" and layer is self.output_layer

    def after_attach(self, model: nn.Module) -> None:
        """Hook for subclasses (nothing by default)."""

    def detach(self, model: nn.Module) -> nn.Module:
        """Remove the pre-hook and put identities back at every site."""
        handle = self._hooks.pop(id(model), None)
        if handle is not None:
            handle.remove()
        for _, layer in quantizable_layers(model):
            for site in layer.QUANT_SITES:
                layer.quant[site] = nn.Identity()
        return model

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict):
        graph = args[0] if args else kwargs.get("graph")
        self.context.begin_forward(graph, module.training)

    @torch.no_grad()
    def initialize(self, model: nn.Module, graph, x: Tensor) -> None:
        """One eval-mode forward pass without gradients (see :meth:`attach`)."""
        was_training = model.training
        model.eval()
        try:
            model(graph, x)
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ training hooks
    def penalty(self, model: nn.Module) -> Tensor:
        """Extra loss term after a forward pass (a 0-dim tensor; 0 when the method has none)."""
        return _zero_like_model(model)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> bool:
        """Called after epoch ``epoch`` (0-based); ``True`` means rebuild the optimizer."""
        return False

    def phase(self, model: nn.Module) -> str:
        """``"train"``, or MixQ's ``"search"`` / ``"retrain"``.

        Model selection (best validation epoch) should only consider ``"train"`` and
        ``"retrain"`` epochs.
        """
        return "train"

    def summary(self, model: nn.Module) -> dict:
        """Method-specific facts to log (e.g. A2Q's average bit width, MixQ's choices)."""
        return {"method": self.method}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"


def _zero_like_model(model: nn.Module) -> Tensor:
    p = next(model.parameters(), None)
    return torch.zeros((), device=p.device if p is not None else None)
