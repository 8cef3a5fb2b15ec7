from pathlib import Path

import pytest

from cemr.config import Config, ConfigError, expand_path, flatten, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_the_demo():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.data.format == "demo"
    assert cfg.selftrain.threshold == 0.7


def test_unknown_key_is_refused_with_its_dotted_name(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 2\n  epocs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "train.epocs" in str(err.value)
    assert str(p) in str(err.value)


def test_type_errors_name_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(p)


def test_overrides_are_parsed_as_yaml_and_validated():
    cfg = load_config(None, ["train.epochs=3", "selftrain.threshold=0.6", "model.bert.enabled=false"])
    assert cfg.train.epochs == 3
    assert cfg.selftrain.threshold == 0.6
    assert cfg.model.bert.enabled is False
    with pytest.raises(ConfigError, match="threshold"):
        load_config(None, ["selftrain.threshold=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=1"])


def test_nested_lists_of_dataclasses(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "data:\n  format: jsonl\n  train: a.jsonl\n  unlabeled:\n    - {path: u.txt}\n"
        "    - {path: v.csv, column: text, bogus: 1}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"data.unlabeled\[1\].bogus"):
        load_config(p)


def test_expand_path_uses_cemr_data_dir(monkeypatch):
    monkeypatch.setenv("CEMR_DATA_DIR", "/data/x")
    assert expand_path("${CEMR_DATA_DIR}/yidu") == "/data/x/yidu"


def test_flatten_gives_dotted_scalars():
    flat = flatten(load_config(None))
    assert flat["model.bilm.hidden_dim"] == 128
    assert flat["selftrain.threshold"] == 0.7
    assert all("." in k or k in ("name", "run_dir") for k in flat)


@pytest.mark.parametrize("path", sorted((ROOT / "ray_configs" / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_config_loads(path):
    cfg = load_config(path)
    assert cfg.name
