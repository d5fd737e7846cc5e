"""QuantConfig: defaults, validation messages that name the key and the allowed values."""

import pytest

from qgnn.errors import ConfigError
from qgnn.quant import (
    A2QFramework,
    DegreeQuantFramework,
    MixQFramework,
    QATFramework,
    QuantConfig,
    QuantFramework,
    build_quantization,
)


def test_build_picks_the_framework():
    assert type(build_quantization(None)) is QuantFramework
    assert type(build_quantization(QuantConfig(method="qat"))) is QATFramework
    assert type(build_quantization({"method": "dq"})) is DegreeQuantFramework
    assert type(build_quantization({"method": "a2q"})) is A2QFramework
    assert type(build_quantization({"method": "mixq"})) is MixQFramework


def test_defaults():
    cfg = QuantConfig(method="qat")
    assert (cfg.resolved_weight_bits(), cfg.resolved_act_bits()) == (8, 8)
    a2q = QuantConfig(method="a2q")
    assert (a2q.resolved_weight_bits(), a2q.a2q_init_bits()) == (4, 4.0)
    assert a2q.a2q.bank_size == 1000
    assert QuantConfig().mixq.bits == (2, 4, 8)
    assert QuantConfig().qat.momentum == 0.01


def test_from_dict_and_to_dict_round_trip():
    data = {"method": "mixq", "mixq": {"bits": [2, 8], "base": "dq"}, "dq": {"p_low": 0.2}}
    cfg = QuantConfig.from_dict(data)
    assert cfg.mixq.bits == (2, 8) and cfg.dq.p_low == 0.2
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    for method in ("fp32", "qat", "dq", "a2q"):
        plain = QuantConfig(method=method, weight_bits=4)
        assert QuantConfig.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize("data, key, allowed", [
    ({"method": "int4"}, "quant.method", "fp32, qat, dq, a2q, mixq"),
    ({"method": "qat", "weight_bits": 0}, "quant.weight_bits", "[1, 16]"),
    ({"method": "qat", "act_bits": 4.5}, "quant.act_bits", "integer"),
    ({"method": "qat", "bitz": 4}, "quant.bitz", "allowed keys"),
    ({"method": "a2q", "lr": 0.0}, "quant.lr", "> 0"),
    ({"method": "qat", "a2q": {"penalty": 1.0}}, "quant.a2q", "quant.method"),
    ({"method": "dq", "dq": {"p_lo": 0.1}}, "quant.dq.p_lo", "allowed keys"),
    ({"method": "dq", "dq": {"edge_mask": "dst"}}, "quant.dq.edge_mask", "source, none"),
    ({"method": "dq", "dq": {"p_low": 0.8, "change": 0.5}}, "quant.dq.p_low + quant.dq.change", "[0, 1]"),
    ({"method": "dq", "dq": {"percentile": 0.7}}, "quant.dq.percentile", "[0.0, 0.5)"),
    ({"method": "a2q", "a2q": {"node_mode": "nodes"}}, "quant.a2q.node_mode", "auto, per_node, bank"),
    ({"method": "a2q", "a2q": {"init_bits": 12}}, "quant.a2q.init_bits", "[1, 8]"),
    ({"method": "a2q", "a2q": {"step_init": "mean"}}, "quant.a2q.step_init", "max, lsq"),
    ({"method": "mixq", "mixq": {"bits": []}}, "quant.mixq.bits", "non-empty"),
    ({"method": "mixq", "mixq": {"bits": [2, 2]}}, "quant.mixq.bits", "repeated"),
    ({"method": "mixq", "mixq": {"base": "a2q"}}, "quant.mixq.base", "qat, dq"),
    ({"method": "mixq", "mixq": {"reinit": "yes"}}, "quant.mixq.reinit", "true or false"),
    ({"method": "mixq", "mixq": {"search_epochs": -1}}, "quant.mixq.search_epochs", ">= 0"),
])
def test_errors_name_the_key_and_the_allowed_values(data, key, allowed):
    with pytest.raises(ConfigError) as info:
        QuantConfig.from_dict(data)
    assert key in str(info.value) and allowed in str(info.value)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="quant.method"):
        QuantConfig(method="int8")


def test_quantizer_parameters_get_their_own_learning_rate():
    """``quant.lr`` sets the learned steps' and bits' rate; ``None`` means ``train.lr``."""
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import make_optimizer
    from qgnn.nn import NodeClassifier
    from qgnn.quant import build_quantization, quantizer_parameters

    for extra, expected in (([], 0.01), (["quant.lr=0.001"], 0.001)):
        cfg = load_config(None, ["quant.method=a2q", "train.lr=0.01"] + extra)
        model = NodeClassifier("gcn", 6, 8, 3)
        build_quantization(cfg.quant).attach(model)
        quant_ids = {id(p) for p in quantizer_parameters(model)}
        assert quant_ids
        groups = make_optimizer(cfg, model).param_groups
        quant_group = next(g for g in groups if {id(p) for p in g["params"]} == quant_ids)
        assert quant_group["lr"] == expected and quant_group["weight_decay"] == 0.0
        assert all(g["lr"] == 0.01 for g in groups if g is not quant_group)


def test_a2q_channel_steps_can_take_their_own_learning_rate():
    """``quant.a2q.channel_lr`` splits the per-channel (LSQ) steps off the quantizer group."""
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import make_optimizer
    from qgnn.nn import NodeClassifier
    from qgnn.quant import LSQQuantizer, NodeWiseQuantizer, build_quantization
    from qgnn.quant.framework import quantizer_modules

    cfg = load_config(None, ["quant.method=a2q", "train.lr=0.01", "quant.lr=0.1",
                             "quant.a2q.channel_lr=0.002"])
    model = NodeClassifier("gin", 6, 8, 3)
    build_quantization(cfg.quant).attach(model)
    lsq = {id(p) for _, q in quantizer_modules(model) if isinstance(q, LSQQuantizer) for p in q.parameters()}
    node = {id(p) for _, q in quantizer_modules(model) if isinstance(q, NodeWiseQuantizer) for p in q.parameters()}
    assert lsq and node
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in make_optimizer(cfg, model).param_groups}
    assert by_lr[0.002] == lsq and by_lr[0.1] == node
    assert not (by_lr[0.01] & (lsq | node))
    with pytest.raises(ConfigError, match="quant.a2q.channel_lr"):
        load_config(None, ["quant.method=a2q", "quant.a2q.channel_lr=-1"])
