"""Config schema: defaults, overrides and errors that name the key and the fix."""

from pathlib import Path

import pytest

from qgnn.engine.config import load_config
from qgnn.errors import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(str(path))
    assert cfg.name == path.stem


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["model.hidden=128", "train.lr=0.02", "model.batch_norm=true", "train.patience=null"])
    assert cfg.model.hidden == 128 and cfg.train.lr == 0.02 and cfg.model.batch_norm is True
    assert cfg.train.patience is None


def test_exponent_without_dot_is_a_float():
    # YAML 1.1 reads 1e-5 as the string '1e-5'; a float key takes it as the number
    cfg = load_config(None, ["train.lr=1e-3", "quant.method=mixq", "quant.mixq.memory_weight=2E-5"])
    assert cfg.train.lr == 1e-3 and cfg.quant.mixq.memory_weight == 2e-5
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.hiden=128", r"unknown config key 'model.hiden'.*Allowed keys in model: arch, hidden"),
        ("modle.hidden=128", r"unknown config key 'modle'"),
        ("model.hidden=abc", r"'model.hidden' must be int, got 'abc'"),
        ("model.hidden=1.5", r"'model.hidden' must be int"),
        ("model.batch_norm=1", r"'model.batch_norm' must be bool"),
        ("model.arch=gcnn", r"'model.arch' is 'gcnn'; allowed values: gcn, gin, gat"),
        ("train.patience=x", r"'train.patience' must be int or null"),
        ("model=3", r"'model' must be a mapping"),
        ("nokeyvalue", r"--set takes key=value"),
        ("model.dropout=1.5", r"'model.dropout' is a probability in \[0, 1\), got 1.5"),
        ("model.head_dropout=-0.1", r"'model.head_dropout' is a probability"),
        ("model.hidden=0", r"'model.hidden' must be a positive integer, got 0"),
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(str(listy))
