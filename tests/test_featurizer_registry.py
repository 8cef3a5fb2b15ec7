"""The featurizer registry: adding a featurizer is one entry; pretraining, loading, the
fingerprint, the tagger and model directories all follow it. And train.pretrain_seed."""
from dataclasses import dataclass

import pytest

import cemr.features.registry as registry
from cemr.config import load_config
from cemr.features.registry import FEATURIZERS, FeaturizerKind, feature_order
from cemr.fingerprint import pretrain_fingerprint
from cemr.modeldir import load_model, save_model
from cemr.pretrain import load_featurizers, pretrain_all
from cemr.tagger import build_tagger
from tagger_fakes import FakeFeaturizer, tiny_model_config, tiny_setup

TEXTS = ["患者无发热", "腹部平软无压痛", "双肺呼吸音清"]


@dataclass
class ToyConfig:
    enabled: bool = True
    dim: int = 3
    epochs: int = 1


@pytest.fixture
def toy(monkeypatch):
    """A third featurizer, registered the way a new one would be: one FeaturizerKind."""
    seen = {"pretrain": 0}

    def pretrain(cfg, out, inputs):
        seen["pretrain"] += 1
        assert inputs.char_vectors.dim == cfg.word2vec.dim  # word2vec comes first
        FakeFeaturizer(cfg.toy.dim, seed=inputs.seed).save(out)
        return {"texts": float(len(list(inputs.texts())))}

    kind = FeaturizerKind("toy", pretrain, lambda out, cfg, device: FakeFeaturizer.load(out, device))
    monkeypatch.setitem(FEATURIZERS, "toy", kind)
    return seen


def _model_cfg(**on):
    cfg = tiny_model_config(enabled=False)  # no dictionary feature: no lexicon needed
    cfg.word2vec.dim, cfg.word2vec.epochs = 8, 1
    cfg.bert.enabled, cfg.bilm.enabled = on.get("bert", False), on.get("bilm", False)
    cfg.toy = ToyConfig()  # its config section
    return cfg


def test_a_registered_featurizer_is_pretrained_loaded_built_and_saved(tmp_path, toy):
    cfg = _model_cfg()
    metrics = pretrain_all(lambda: TEXTS, cfg, tmp_path / "pretrain")
    assert toy["pretrain"] == 1 and metrics["toy.texts"] == 3.0
    feats = load_featurizers(tmp_path / "pretrain", cfg)
    assert list(feats) == ["toy"] and feats["toy"].dim == 3
    _, labels, vocab = tiny_setup()
    tagger = build_tagger(cfg, labels, vocab, **feats)
    assert tagger.input_dim == cfg.char_dim + 3 and tagger.hparams["featurizer_dims"] == {"toy": 3}
    out = save_model(tmp_path / "model", tagger, vocab=vocab, labels=labels, model_config=cfg)
    assert (out / "toy").is_dir()
    loaded = load_model(out, featurizer_classes={"toy": FakeFeaturizer})
    assert list(loaded.tagger.featurizers()) == ["toy"]


def test_the_fingerprint_has_a_part_per_enabled_featurizer(toy):
    cfg = load_config(None, ["model.bilm.enabled=false", "model.bert.enabled=false"])
    cfg.model.toy = ToyConfig()
    parts = pretrain_fingerprint(cfg, "p").parts
    assert set(parts) == {"word2vec", "toy"}
    assert parts["toy"]["config"]["model.toy.dim"] == 3
    cfg.model.toy.enabled = False
    assert set(pretrain_fingerprint(cfg, "p").parts) == {"word2vec"}


def test_enabled_and_given_featurizers_must_agree(toy):
    _, labels, vocab = tiny_setup()
    cfg = _model_cfg()
    with pytest.raises(ValueError, match="model.toy.enabled is true but no toy featurizer"):
        build_tagger(cfg, labels, vocab)
    cfg.toy.enabled = False
    with pytest.raises(ValueError, match="model.toy.enabled is false"):
        build_tagger(cfg, labels, vocab, toy=FakeFeaturizer(3))
    with pytest.raises(ValueError, match="unknown featurizer"):
        build_tagger(cfg, labels, vocab, nope=FakeFeaturizer(3))


def test_feature_order_is_the_registrys_whatever_the_call_order():
    assert feature_order(["bilm", "bert"]) == ["bert", "bilm"]
    assert feature_order(["zz", "bilm", "aa"]) == ["bilm", "aa", "zz"]
    assert list(registry.FEATURIZERS)[:3] == ["bert", "bilm", "bigram"]  # saved models' input layout: never reorder


def test_pretrain_seed_decouples_pretraining_from_the_training_seed():
    def digest(*over):
        return pretrain_fingerprint(load_config(None, list(over)), "p").digest()

    assert digest("train.seed=1") != digest("train.seed=2")  # by default pretraining follows train.seed
    assert digest("train.seed=1", "train.pretrain_seed=7") == digest("train.seed=2", "train.pretrain_seed=7")
    assert digest("train.pretrain_seed=7") != digest("train.pretrain_seed=8")
