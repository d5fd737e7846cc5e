"""The real storage size of a (quantized) model: weights and features in bits.

:func:`size_report` lists every stored weight (every parameter of the model: quantized ones
at their quantizer's bits, the rest at 32) and every feature tensor that passes a
quantization site (at the bits its quantizer stores it with; 32 for an identity site), then
the totals, the average bit width and the compression ratio against float32. Quantizer
parameters themselves (steps, learnable bits, MixQ logits) are counted separately as
``quantizer_param_bits`` (32 bits each) and are not part of the ratio.

Feature sizes come from the last forward pass of each quantizer (recorded in buffers, so
they survive a checkpoint). Identity sites record nothing: pass ``example=(graph, x)`` to
run one eval-mode forward pass that measures every site, fp32 models included.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from qgnn.quant.framework import quantizable_layers, quantizer_parameters
from qgnn.quant.quantizers import QuantizerBase

FLOAT_BITS = 32
# Parameter of a weight site, for layers whose site name is not the parameter name.
_WEIGHT_SITE_PARAMS = {"weight1": "lin1.weight", "weight2": "lin2.weight"}


def _probe(model: nn.Module, example: tuple) -> dict[tuple[int, str], tuple[int, Optional[int]]]:
    """Run one eval forward; ``(id(layer), site) -> (numel, id of the parameter or None)``."""
    seen: dict = {}
    handles = []
    for _, layer in quantizable_layers(model):
        for site, module in layer.quant.items():
            def hook(mod, args, key=(id(layer), site)):
                x = args[0]
                seen[key] = (x.numel(), id(x) if isinstance(x, nn.Parameter) else None)
            handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _site_bits(module: nn.Module) -> float:
    if isinstance(module, QuantizerBase):
        return module.storage_bits()
    return float(FLOAT_BITS)


def size_report(model: nn.Module, example: Optional[tuple] = None) -> dict:
    """Bits of every stored weight and feature tensor of ``model``.

    Args:
        model: any module with quantizable layers (quantized or not).
        example: optional ``(graph, x)`` for one measuring forward pass (eval mode, no
            gradients); needed for the feature sizes of identity (fp32) sites.

    Returns:
        a dict with ``weights`` and ``features`` (lists of ``{"name", "numel", "bits"}``,
        ``bits`` the average per element), ``weight_bits``, ``feature_bits``,
        ``total_bits``, ``float32_bits``, ``average_bits`` (total / elements),
        ``weight_average_bits``, ``feature_average_bits``, ``compression_ratio``
        (float32 bits / total bits), ``total_kb`` and ``quantizer_param_bits``.
    """
    probed = _probe(model, example) if example is not None else {}
    param_ids = {id(p): name for name, p in model.named_parameters()}
    quant_param_ids = {id(p) for p in quantizer_parameters(model)}
    weight_bits_of: dict[str, float] = {}
    features = []

    for layer_name, layer in quantizable_layers(model):
        own_params = dict(layer.named_parameters())
        prefix = f"{layer_name}." if layer_name else ""
        for site, kind in layer.QUANT_SITES.items():
            module = layer.quant[site]
            bits = _site_bits(module)
            numel, pid = probed.get((id(layer), site), (None, None))
            if numel is None and isinstance(module, QuantizerBase) and int(module.observed_numel) > 0:
                numel = int(module.observed_numel)
            if kind == "weight":
                name = param_ids.get(pid) if pid is not None else None
                if name is None:
                    local = site if site in own_params else _WEIGHT_SITE_PARAMS.get(site)
                    name = prefix + local if local in own_params else None
                if name is not None:
                    weight_bits_of[name] = bits
                continue
            if numel is not None:
                features.append({"name": f"{prefix}{site}", "kind": kind, "numel": numel, "bits": bits})

    weights = []
    quantizer_param_bits = 0
    for name, p in model.named_parameters():
        if id(p) in quant_param_ids:
            quantizer_param_bits += FLOAT_BITS * p.numel()
            continue
        weights.append({"name": name, "numel": p.numel(),
                        "bits": weight_bits_of.get(name, float(FLOAT_BITS))})

    def total(rows):
        return sum(r["numel"] * r["bits"] for r in rows), sum(r["numel"] for r in rows)

    w_bits, w_numel = total(weights)
    f_bits, f_numel = total(features)
    all_bits, all_numel = w_bits + f_bits, w_numel + f_numel
    return {
        "weights": weights,
        "features": features,
        "weight_bits": w_bits,
        "feature_bits": f_bits,
        "total_bits": all_bits,
        "float32_bits": FLOAT_BITS * all_numel,
        "average_bits": all_bits / all_numel if all_numel else float(FLOAT_BITS),
        "weight_average_bits": w_bits / w_numel if w_numel else float(FLOAT_BITS),
        "feature_average_bits": f_bits / f_numel if f_numel else None,
        "compression_ratio": FLOAT_BITS * all_numel / all_bits if all_bits else 1.0,
        "total_kb": all_bits / (8 * 1024),
        "quantizer_param_bits": quantizer_param_bits,
    }
