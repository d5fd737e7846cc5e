"""MixQ (Moustafa et al., ICDE 2025): searched mixed precision, then fixed-width QAT.

Parts chosen (DESIGN §3):

- Every site (weights, node and edge tensors) becomes a :class:`MixedQuantizer` over the
  candidate widths ``cfg.mixq.bits`` (default {2, 4, 8}; capped by ``weight_bits`` /
  ``act_bits`` when those are set), each candidate built by the base
  framework's parts (vanilla QAT, or Degree-Quant with its shared protective mask), with
  learnable logits per component.
- The logits start as the MixQ reference code's ``softmax(softmax(bits))`` (``mixq.logit_init``),
  a mild tilt towards the widest width: a component the search barely moves (the small ones:
  weights, edge weights) keeps it, where uniform starts left their width to noise
  (validation over the 12 Planetoid cells: 63.8 against 58.5).
- Search phase (the first ``search_epochs`` epochs): the forward mixes the candidates'
  fake-quantized outputs with softmax weights; :meth:`MixQFramework.penalty` is
  ``lambda * expected memory (KB)``, ``sum_c sum_k w_ck * bits_k * numel_c / 8 / 1024``.
- The last layer's output (a node classifier's logits) is not searched: it keeps the widest
  candidate. In the 10-seed Planetoid grids (W8A8 and W4A4) the search gave it 2 bits in 39
  of 120 runs, and those runs fell far below the rest (Cora GCN W8A8: 68.2% against 79.8%;
  Cora GIN: 15.3% against 73.7%): four levels of logits make argmax ties.
- The logits take a plain SGD step (``mixq.logit_lr``) as soon as their gradient is
  accumulated, and leave no gradient for the model's optimizer. Under Adam every logit
  moves at about the learning rate whatever the size of its gradient, so a 448-element
  weight was pushed to 2 bits as hard as the 3.9M-element input and the last layer's
  logits ended at 2 bits (Cora GCN W8A8: 68.5% against 82.7% in float32).
- Selection (``on_epoch_end`` after the last search epoch): each component keeps its most
  likely width; from then on only that candidate runs (its observer state carries over),
  so the rest of training is ordinary fixed-width QAT (or DQ). The choice is stored in
  each quantizer's ``selected`` buffer and survives ``state_dict`` round trips.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from qgnn.quant.config import QuantConfig
from qgnn.quant.degree_quant import DegreeQuantFramework
from qgnn.quant.framework import QuantFramework, _zero_like_model, quantizer_modules
from qgnn.quant.observers import Observer
from qgnn.quant.qat import QATFramework
from qgnn.quant.quantizers import MixedQuantizer

BITS_PER_KB = 8 * 1024


class MixQFramework(QuantFramework):
    """MixQ with options ``cfg.mixq``; ``cfg.mixq.base`` picks QAT or DQ parts."""

    method = "mixq"

    def __init__(self, cfg: Optional[QuantConfig] = None):
        super().__init__(cfg)
        base_cls = DegreeQuantFramework if self.cfg.mixq.base == "dq" else QATFramework
        self.base = base_cls(self.cfg)
        self.context = self.base.context  # DQ candidates read the mask sampled for this model

    def attach(self, model: nn.Module, example: Optional[tuple] = None) -> nn.Module:
        model = super().attach(model, example)
        self.base.input_layer = self.input_layer
        return model

    def make_quantizer(self, layer: nn.Module, site: str, kind: str) -> nn.Module:
        if kind == "weight":
            candidates = [self.base.weight_part(b) for b in self.cfg.mixq_candidates("weight")]
        else:
            widths = self.cfg.mixq_candidates("act")
            if self.is_model_output(layer, site):
                widths = (max(widths),)
            model_input = self.is_model_input(layer, site)
            candidates = [self.base.activation_part(kind, b, model_input=model_input) for b in widths]
        return MixedQuantizer(candidates, logit_init=self.cfg.mixq.logit_init)

    def after_attach(self, model: nn.Module) -> None:
        for _, q in self.mixed_quantizers(model):
            q.logits.register_post_accumulate_grad_hook(self._sgd_step)
        if self.cfg.mixq.search_epochs == 0:  # no search: every component starts fixed
            self.select(model)

    @torch.no_grad()
    def _sgd_step(self, logits: nn.Parameter) -> None:
        logits.add_(logits.grad, alpha=-self.cfg.mixq.logit_lr)
        logits.grad = None  # the model's optimizer skips parameters without a gradient

    def mixed_quantizers(self, model: nn.Module) -> list[tuple[str, MixedQuantizer]]:
        return [(n, q) for n, q in quantizer_modules(model) if isinstance(q, MixedQuantizer)]

    def expected_memory_kb(self, model: nn.Module) -> Optional[torch.Tensor]:
        """Expected memory (KB) of the searching components in the last forward pass."""
        total = None
        for _, q in self.mixed_quantizers(model):
            if q.expected_bits is None:
                continue
            term = q.expected_bits * int(q.observed_numel) / BITS_PER_KB
            total = term if total is None else total + term
        return total

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``lambda * expected memory (KB)`` while searching, 0 after selection."""
        memory = self.expected_memory_kb(model)
        if memory is None:
            return _zero_like_model(model)
        return self.cfg.mixq.memory_weight * memory

    def select(self, model: nn.Module) -> dict[str, int]:
        """Fix every component to its most likely width; returns ``{name: bits}``."""
        chosen = {name: q.select() for name, q in self.mixed_quantizers(model)}
        if self.cfg.mixq.reinit:
            if hasattr(model, "reset_parameters"):
                model.reset_parameters()
            for module in model.modules():  # ranges of the old weights no longer apply
                if isinstance(module, Observer):
                    module.reset()
        return chosen

    def on_epoch_end(self, model: nn.Module, epoch: int) -> bool:
        """Select after epoch ``search_epochs - 1``; returns ``True`` then (rebuild the optimizer)."""
        if self.phase(model) == "search" and epoch + 1 >= self.cfg.mixq.search_epochs:
            self.select(model)
            return True
        return False

    def phase(self, model: nn.Module) -> str:
        searching = any(q.searching for _, q in self.mixed_quantizers(model))
        return "search" if searching else "retrain"

    def summary(self, model: nn.Module) -> dict:
        out: dict = {"method": self.method, "base": self.cfg.mixq.base, "phase": self.phase(model)}
        out["bits"] = {
            name: (q.selected_bits if not q.searching else
                   q.candidate_bits[int(q.logits.argmax())])
            for name, q in self.mixed_quantizers(model)
        }
        memory = self.expected_memory_kb(model)
        if memory is not None:
            out["expected_memory_kb"] = float(memory.detach())
        return out
