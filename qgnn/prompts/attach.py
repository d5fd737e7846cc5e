"""Fill the prompt slots of a model's layers and report the prompts' overhead."""

from __future__ import annotations

from torch import nn

from qgnn.nn.conv import QuantizableConv
from qgnn.prompts.config import PromptConfig
from qgnn.prompts.lorap import LoRAP
from qgnn.prompts.node import GPF, GPFPlus


def _aggregated_width(conv: QuantizableConv) -> int:
    """Width of the aggregated feature ``s`` that LoRAP sees (GAT: the joined heads)."""
    if hasattr(conv, "heads"):
        return conv.heads * conv.out_channels if conv.concat else conv.out_channels
    if hasattr(conv, "lin1"):  # GIN aggregates its input
        return conv.in_channels
    return conv.out_channels


def attach_prompts(model: nn.Module, cfg: PromptConfig) -> nn.Module:
    """Put GPF / GPF-plus in the first layer's node slot and LoRAP in every layer's
    aggregation slot, as ``cfg`` asks. Prompt parameters stay float32 and train jointly."""
    convs = [m for m in model.modules() if isinstance(m, QuantizableConv)]
    if not convs:
        raise ValueError("attach_prompts found no qgnn layers in the model.")
    if cfg.node != "none":
        width = convs[0].in_channels
        convs[0].node_prompt = (GPF(width) if cfg.node == "gpf"
                                else GPFPlus(width, cfg.node_k, fused=cfg.fused))
    if cfg.aggregation == "lorap":
        shared: dict = {}
        for conv in convs:
            dim = _aggregated_width(conv)
            key = (dim, conv.in_channels)
            if cfg.shared and key in shared:
                conv.agg_prompt = shared[key]
                continue
            head = LoRAP(dim, cfg.k, cfg.rank, cfg.scorer_input, score_dim=conv.in_channels, fused=cfg.fused)
            conv.agg_prompt = shared[key] = head
    return model


def prompt_report(model: nn.Module, num_nodes: int) -> dict:
    """Parameters and FLOPs (per forward over ``num_nodes`` nodes) added by the prompts."""
    heads = {}
    for conv in (m for m in model.modules() if isinstance(m, QuantizableConv)):
        for slot in (conv.node_prompt, conv.agg_prompt):
            if slot is not None:
                heads.setdefault(id(slot), [slot, 0])[1] += 1
    params = sum(p.numel() for m, _ in heads.values() for p in m.parameters())
    flops = sum(m.flops_per_node() * uses * num_nodes for m, uses in heads.values())
    model_params = sum(p.numel() for p in model.parameters())
    return {
        "prompt_parameters": int(params),
        "prompt_parameter_share": params / max(model_params, 1),
        "prompt_flops": int(flops),
    }
