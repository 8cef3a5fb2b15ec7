import re
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


# ----------------------------------------------------------------------------------------------
# Wrong values fail when the config loads, all of them at once
# ----------------------------------------------------------------------------------------------

BAD = [
    (["selftrain.confidence=min_margnal"],
     r"selftrain\.confidence = 'min_margnal': not a confidence method.*did you mean min_marginal"),
    (["selftrain.selection=sentences"], r"selftrain\.selection = 'sentences': not a selection mode.*partial"),
    (["selftrain.mode=accumulated"], r"selftrain\.mode = 'accumulated': not a bookkeeping mode"),
    (["lexicon.preset=yidoo"], r"lexicon\.preset = 'yidoo': not a lexicon preset.*did you mean yidu"),
    (["lexicon.sources=[{path: a.txt, format: tsv}]"], r"lexicon\.sources\[0\]\.format = 'tsv'"),
    (["data.format=conll", "data.train=x"], r"data\.format = 'conll': not a labeled format \(one of demo, auto, ccks2017"),
    (["data.unlabeled=[{path: u.txt, format: txt}]"], r"data\.unlabeled\[0\]\.format = 'txt'.*did you mean text"),
    (["data.unlabeled=[{path: ''}]"], r"data\.unlabeled\[0\]\.path = '': must not be empty"),
    (["data.overlap_policy=longest"], r"data\.overlap_policy = 'longest': not an overlap policy"),
    (["data.train=x.jsonl"], r"data\.format=demo uses the built-in corpus"),
    (["data.format=jsonl"], r"data\.train is required"),
    (["train.device=tpu"], r"train\.device = 'tpu': expected auto, cpu, cuda or cuda:N"),
    (["train.device=cuda:x"], r"train\.device = 'cuda:x'"),
    (["model.bilm.epochs=-1"], r"model\.bilm\.epochs = -1: must be >= 1"),
    (["train.patience=-5"], r"train\.patience = -5: must be >= 0"),
    (["train.batch_size=0"], r"train\.batch_size = 0: must be >= 1"),
    (["train.lr=-0.1"], r"train\.lr = -0\.1: must be > 0"),
    (["model.dictionary.dropout=1.0"], r"model\.dictionary\.dropout = 1\.0: must be in \[0, 1\)"),
    (["model.bert.heads=3"], r"model\.bert\.hidden_size \(128\) must be a multiple of model\.bert\.heads \(3\)"),
    (["model.attention_heads=3"], r"model\.attention_heads \(3\) must divide .* 2 \* model\.gru_hidden = 256"),
    (["model.bert.stride=300"], r"model\.bert\.stride \(300\) must be <= model\.bert\.window \(256\)"),
    (["sweep.start=0.8", "sweep.stop=0.2"], r"sweep\.start \(0\.8\) must be <= sweep\.stop \(0\.2\)"),
    (["sweep.step=0"], r"sweep\.step = 0\.0: must be > 0"),
    (["data.dev_fraction=0.6", "data.test_fraction=0.5"], r"data\.dev_fraction \+ data\.test_fraction"),
    (["lexicon.min_length=5", "lexicon.max_length=3"], r"lexicon\.min_length \(5\) must be <= lexicon\.max_length"),
    (["data.max_rejected=1.5"], r"data\.max_rejected = 1\.5: must be in \[0, 1\]"),
    (["cluster.gpu_wait_s=-1"], r"cluster\.gpu_wait_s = -1\.0: must be >= 0"),
    (["cluster.max_failed_fraction=2"], r"cluster\.max_failed_fraction = 2\.0: must be in \[0, 1\]"),
    (["cluster.actors=0"], r"cluster\.actors = 0: must be >= 1"),
    (["cluster.actor_threads=0"], r"cluster\.actor_threads = 0"),
    (["selftrain.threshold=-0.1"], r"selftrain\.threshold = -0\.1: must be in \[0, 1\]"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_a_wrong_value_fails_at_load_naming_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides)
    assert f"override {overrides[-1]}" in str(err.value) or len(overrides) > 1


def test_the_allowed_choices_are_the_codes_own():
    from cemr.selection import METHODS
    from cemr.corpus.readers import FORMATS
    from cemr.corpus.validate import POLICIES
    from cemr.lexicon import PRESETS
    from cemr.selection import SELECTION_MODES
    from cemr.selftrain import BOOKKEEPING_MODES

    for key, values in [("selftrain.confidence", METHODS + ("min_marginal", "mean_marginal")),
                        ("selftrain.selection", SELECTION_MODES), ("selftrain.mode", BOOKKEEPING_MODES),
                        ("lexicon.preset", tuple(PRESETS)), ("data.overlap_policy", POLICIES)]:
        for v in values:
            assert flatten(load_config(None, [f"{key}={v}"]))[key] == v
    for fmt in FORMATS:
        assert load_config(None, [f"data.unlabeled=[{{path: u, format: {fmt}}}]"]).data.unlabeled[0].format == fmt
        if fmt != "text":
            assert load_config(None, [f"data.format={fmt}", "data.train=x"]).data.format == fmt
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config(None, [f"train.device={device}"]).train.device == device


def test_a_bert_checkpoint_lifts_the_heads_rule_and_null_passes_optional_ranges():
    cfg = load_config(None, ["model.bert.heads=3", "model.bert.checkpoint=/models/bert"])
    assert cfg.model.bert.heads == 3
    assert load_config(None, ["model.bert.heads=3", "model.bert.enabled=false"]).model.bert.heads == 3
    assert load_config(None, ["model.bilm.max_sentences=null"]).model.bilm.max_sentences is None


def test_every_problem_is_reported_at_once_with_its_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: x\n"                              # 1
        "train:\n"                               # 2
        "  epocs: 3\n"                           # 3
        "  patience: -5\n"                       # 4
        "  device: tpu\n"                        # 5
        "selftrain: {confidence: min_margnal, treshold: 0.5}\n"  # 6
        "model:\n"                               # 7
        "  bert: {heads: 3}\n"                   # 8
        "  bilm:\n"                              # 9
        "    epochs: -1\n"                       # 10
        "data:\n"                                # 11
        "  unlabeled:\n"                         # 12
        "    - {path: u.txt}\n"                  # 13
        "    - {path: v.txt, bogus: 1}\n"        # 14
        "zzz: 1\n",                              # 15
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(p, ["lexicon.preset=yidoo"])
    where = {prob.key: prob.where for prob in err.value.problems}
    assert where == {
        "train.epocs": f"{p}:3:3",
        "train.patience": f"{p}:4:3",
        "train.device": f"{p}:5:3",
        "selftrain.confidence": f"{p}:6:13",
        "selftrain.treshold": f"{p}:6:38",
        "model.bert.hidden_size": f"{p}:8:10",
        "model.bilm.epochs": f"{p}:10:5",
        "data.unlabeled[1].bogus": f"{p}:14:21",
        "zzz": f"{p}:15:1",
        "lexicon.preset": "override lexicon.preset=yidoo",
    }
    message = str(err.value)
    assert message.startswith(f"{p}: invalid configuration, 10 problems:")
    assert "did you mean train.epochs?" in message and "did you mean selftrain.threshold?" in message
    # in file order, the overrides after
    assert [prob.where for prob in err.value.problems] == sorted(where.values(), key=lambda w: (
        w.startswith("override"), [int(x) for x in w.split(":")[-2:]] if w.startswith(str(p)) else []))
    assert message.splitlines()[1] == f"  - {p}:3:3: train.epocs: unknown key (did you mean train.epochs?)"


def test_an_unknown_key_found_in_another_section_is_suggested_there():
    with pytest.raises(ConfigError, match=r"train\.threshold: unknown key \(did you mean selftrain\.threshold\?\)"):
        load_config(None, ["train.threshold=0.5"])


def test_a_type_error_does_not_hide_the_other_problems():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epochs=many", "train.patience=-1", "data.format=jsonl"])
    assert {p.key for p in err.value.problems} == {"train.epochs", "train.patience", "data.format"}


def test_a_duplicate_key_is_a_problem(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 2\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{p}:3:3: train\.epochs: duplicate key"):
        load_config(p)


@pytest.mark.parametrize("text,where", [("train:\n  epochs: [1\n", ":3:1:"), ("train:\n  epochs: 2\n lr: 3\n", ":3:2:"),
                                        ("a: 'open\n", ":2:1:")])
def test_a_yaml_syntax_error_gives_file_line_and_column(tmp_path, text, where):
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{p}{where} invalid YAML")):
        load_config(p)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
def test_an_empty_config_file_is_an_error_not_the_demo(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    expected = f"{p}: the config file is empty; to run the embedded demo pass no --config"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(p)


def test_the_top_level_must_be_a_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)


def test_validate_checks_a_tree_built_in_python():
    from cemr.config import TrainConfig, validate

    assert validate(Config()) == Config()
    with pytest.raises(ConfigError) as err:
        validate(Config(train=TrainConfig(epochs=0, patience=-1)))
    assert [p.key for p in err.value.problems] == ["train.epochs", "train.patience"]


def test_every_key_has_a_rule_with_a_meaning():
    from cemr.config import keys_of, sections

    keys = [(key, f) for prefix, cls in sections() for key, f, _ in keys_of(cls, prefix)]
    assert len(keys) > 100
    for key, f in keys:
        rule = f.metadata.get("rule")
        assert rule is not None and len(rule.help) >= 10, f"{key}: no help text"


def test_a_dumped_config_loads_back_unchanged(tmp_path):
    from cemr.config import dump_config

    cfg = load_config(ROOT / "ray_configs" / "experiments" / "yidu_s4k.yaml")
    p = tmp_path / "config.yaml"
    p.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(p) == cfg


def test_config_checks_the_fine_tuning_and_amp_keys():
    from cemr.config import ConfigError, load_config

    cfg = load_config(None, ["train.amp_dtype=bfloat16", "train.bert_lr=null", "train.bert_layer_decay=0.8"])
    assert (cfg.train.amp_dtype, cfg.train.bert_lr, cfg.train.bert_layer_decay) == ("bfloat16", None, 0.8)
    for bad, key in ((["train.amp_dtype=bf16"], "train.amp_dtype"), (["train.bert_warmup=1.5"], "train.bert_warmup"),
                     (["train.bert_layer_decay=0"], "train.bert_layer_decay"), (["train.bert_lr=0"], "train.bert_lr"),
                     (["model.bert.autocast=half"], "model.bert.autocast"),
                     (["model.bert.window_batch_size=0"], "model.bert.window_batch_size")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, bad)


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads 3e-5 as a string; a learning rate written so is still a number,
    in a file and in an override; a word is still refused."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  bert_lr: 3e-5\n  lr: 1.5E-3\n", encoding="utf-8")
    cfg = load_config(path, ["train.weight_decay=1e-2"])
    assert (cfg.train.bert_lr, cfg.train.lr, cfg.train.weight_decay) == (3e-5, 1.5e-3, 0.01)
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])
