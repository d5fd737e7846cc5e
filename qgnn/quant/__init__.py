"""Quantization-aware training for GNNs: primitives, quantizers and four frameworks.

- :mod:`qgnn.quant.functional`: integer grids, the rounding rule, STE / clipped gradients,
  scale rules.
- :mod:`qgnn.quant.observers`: momentum min/max, running extremum, sampled percentile.
- :mod:`qgnn.quant.quantizers`: :class:`FakeQuantize`, :class:`LSQQuantizer`,
  :class:`NodeWiseQuantizer`, :class:`MaskedQuantizer`, :class:`MixedQuantizer`, usable on
  plain tensors.
- Frameworks, one file each: ``qat``, ``degree_quant``, ``a2q``, ``mixq``; built from a
  :class:`QuantConfig` by :func:`build_quantization`.
- :func:`size_report`: bits of every stored weight and feature, average bit width,
  compression ratio.

Example::

    >>> import torch
    >>> from qgnn.graph import Graph
    >>> from qgnn.nn import NodeClassifier
    >>> from qgnn.quant import QuantConfig, build_quantization, size_report
    >>> g = Graph.from_edges([0, 1, 2, 3], [1, 2, 3, 0])
    >>> x = torch.randn(4, 5)
    >>> model = NodeClassifier("gcn", 5, 8, 3)
    >>> framework = build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4))
    >>> _ = framework.attach(model, example=(g, x))
    >>> loss = model(g, x).sum() + framework.penalty(model)
    >>> loss.backward()
    >>> size_report(model)["compression_ratio"] > 1
    True
"""

from __future__ import annotations

from typing import Optional

from qgnn.quant.a2q import A2QFramework
from qgnn.quant.config import A2QOptions, DQOptions, MixQOptions, QATOptions, QuantConfig
from qgnn.quant.context import QuantContext
from qgnn.quant.degree_quant import DegreeQuantFramework
from qgnn.quant.framework import (
    QuantFramework,
    model_parameters,
    quantizable_layers,
    quantizer_modules,
    quantizer_parameters,
)
from qgnn.quant.mixq import MixQFramework
from qgnn.quant.observers import (
    MinMaxObserver,
    Observer,
    PercentileObserver,
    RunningExtremumObserver,
)
from qgnn.quant.qat import QATFramework
from qgnn.quant.quantizers import (
    FakeQuantize,
    LSQQuantizer,
    MaskedQuantizer,
    MixedQuantizer,
    NodeWiseQuantizer,
    QuantizerBase,
)
from qgnn.quant.report import size_report

FRAMEWORKS = {
    "fp32": QuantFramework,
    "qat": QATFramework,
    "dq": DegreeQuantFramework,
    "a2q": A2QFramework,
    "mixq": MixQFramework,
}


def build_quantization(cfg: Optional[QuantConfig] = None) -> QuantFramework:
    """The framework object for ``cfg.method`` (``fp32`` when ``cfg`` is ``None``).

    ``cfg`` may also be a mapping (the ``quant:`` section of a config file).
    """
    if cfg is None:
        cfg = QuantConfig()
    elif not isinstance(cfg, QuantConfig):
        cfg = QuantConfig.from_dict(cfg)
    cfg.validate()
    return FRAMEWORKS[cfg.method](cfg)


__all__ = [
    "build_quantization",
    "size_report",
    "QuantConfig",
    "QATOptions",
    "DQOptions",
    "A2QOptions",
    "MixQOptions",
    "QuantFramework",
    "QATFramework",
    "DegreeQuantFramework",
    "A2QFramework",
    "MixQFramework",
    "QuantContext",
    "QuantizerBase",
    "FakeQuantize",
    "LSQQuantizer",
    "NodeWiseQuantizer",
    "MaskedQuantizer",
    "MixedQuantizer",
    "Observer",
    "MinMaxObserver",
    "RunningExtremumObserver",
    "PercentileObserver",
    "quantizable_layers",
    "quantizer_modules",
    "quantizer_parameters",
    "model_parameters",
    "FRAMEWORKS",
]
