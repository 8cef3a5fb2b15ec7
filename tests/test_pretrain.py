import json
from pathlib import Path

import pytest
import torch

from cemr.config import BertConfig, BiLMConfig, ModelConfig, Word2VecConfig, data_dir
from cemr.features.bert import BertFeaturizer
from cemr.features.bilm import BiLMFeaturizer
from cemr.features.word2vec import CharVectors
from cemr.pretrain import METRICS_FILE, load_char_vectors, load_featurizers, pretrain_all

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "患者头痛三天入院",
    "否认高血压病史，否认糖尿病史",
    "查体：血压 120/80 mmHg",
    "腹部CT示肝脏占位",
] * 6


def tiny_model_cfg(**sections) -> ModelConfig:
    cfg = ModelConfig(
        word2vec=Word2VecConfig(dim=16, window=2, epochs=2),
        bilm=BiLMConfig(embedding_dim=16, hidden_dim=8, epochs=1, batch_size=8, max_len=16),
        bert=BertConfig(hidden_size=16, layers=1, heads=2, intermediate_size=32, max_position=20, window=18,
                        stride=9, pretrain_epochs=1, pretrain_batch_size=8),
    )
    for name, value in sections.items():
        setattr(cfg, name, value)
    return cfg


def test_pretrain_all_writes_every_stage_and_loads_back(tmp_path):
    calls = []

    def factory():
        calls.append(1)
        return iter(TEXTS)

    cfg = tiny_model_cfg()
    messages = []
    metrics = pretrain_all(factory, cfg, tmp_path, seed=0, log=messages.append)
    for sub in ("word2vec", "bilm", "bert"):
        assert (tmp_path / sub).is_dir()
    assert json.loads((tmp_path / METRICS_FILE).read_text(encoding="utf-8")) == metrics
    assert metrics["word2vec.dim"] == 16
    for key in ("bilm.train_ppl_f", "bilm.train_ppl_b", "bilm.heldout_ppl_f", "bilm.heldout_ppl_b",
                "bert.mlm_loss_before", "bert.mlm_loss_after"):
        assert key in metrics
    assert metrics["bilm.embedding_init_rows"] > 0  # word2vec dim == BiLM embedding dim
    assert len(calls) >= 4 and messages
    assert not any("start random" in m for m in messages)

    vectors = load_char_vectors(tmp_path)
    assert isinstance(vectors, CharVectors) and vectors.dim == 16
    feats = load_featurizers(tmp_path, cfg)
    assert list(feats) == ["bert", "bilm"]  # the registry's order: the order features enter the tagger
    bilm, bert = feats["bilm"], feats["bert"]
    assert isinstance(bilm, BiLMFeaturizer) and isinstance(bert, BertFeaturizer)
    text = TEXTS[1] * 3  # longer than BERT's positions: windowed
    assert bilm([text, "患者"]).shape == (2, len(text), 16)
    assert bert([text, "患者"]).shape == (2, len(text), 16)
    assert (bert.window, bert.stride) == (18, 9)
    assert not any(p.requires_grad for p in bert.parameters())


def test_a_bilm_wider_than_word2vec_is_said_to_start_random(tmp_path):
    cfg = tiny_model_cfg(bert=BertConfig(enabled=False))
    cfg.bilm.embedding_dim = 12
    messages = []
    metrics = pretrain_all(lambda: iter(TEXTS), cfg, tmp_path, seed=0, log=messages.append)
    assert metrics["bilm.embedding_init_rows"] == 0
    assert any("embedding_dim 12 != word2vec dim 16" in m and "start random" in m for m in messages)


def test_disabled_stages_are_not_trained_and_load_as_none(tmp_path):
    cfg = tiny_model_cfg()
    cfg.bilm.enabled = False
    cfg.bert.enabled = False
    metrics = pretrain_all(lambda: TEXTS, cfg, tmp_path)
    assert not (tmp_path / "bilm").exists() and not (tmp_path / "bert").exists()
    assert not any(k.startswith(("bilm.", "bert.")) for k in metrics)
    assert load_featurizers(tmp_path, cfg) == {}
    cfg.bilm.enabled = True
    with pytest.raises(FileNotFoundError, match="bilm"):
        load_featurizers(tmp_path, cfg)


def test_a_configured_checkpoint_is_the_starting_point(tmp_path):
    first = tiny_model_cfg()
    first.bilm.enabled = False
    pretrain_all(lambda: TEXTS, first, tmp_path / "base")
    base = tmp_path / "base" / "bert"

    cont = tiny_model_cfg()
    cont.bilm.enabled = False
    cont.bert.checkpoint = str(base)
    metrics = pretrain_all(lambda: TEXTS, cont, tmp_path / "cont")
    assert metrics["bert.continued_pretraining"] == 1.0
    # the held-out split and masking are the same, so the continued run starts where the first ended
    first_metrics = json.loads((tmp_path / "base" / METRICS_FILE).read_text(encoding="utf-8"))
    assert metrics["bert.mlm_loss_before"] == pytest.approx(first_metrics["bert.mlm_loss_after"], rel=1e-4)

    as_is = tiny_model_cfg()
    as_is.bilm.enabled = False
    as_is.bert.checkpoint = str(base)
    as_is.bert.pretrain_epochs = 0
    as_is.bert.freeze = False
    metrics = pretrain_all(lambda: TEXTS, as_is, tmp_path / "asis")
    assert not (tmp_path / "asis" / "bert").exists()
    bert = load_featurizers(tmp_path / "asis", as_is)["bert"]
    reference = BertFeaturizer.load(base)
    torch.testing.assert_close(bert(TEXTS[:2]), reference(TEXTS[:2]))
    assert all(p.requires_grad for p in bert.parameters())  # freeze: false -> fine-tuned with the tagger


def test_loading_from_a_directory_that_was_never_pretrained_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run pretraining first"):
        load_featurizers(tmp_path, tiny_model_cfg())


def _real_unlabeled_texts(limit: int) -> list[str]:
    root = Path(data_dir())
    if not root.is_absolute():
        root = ROOT / root
    folder = root / "ccks2017" / "unlabeled" / "unlabeled-2" / "病史特点"
    files = sorted(folder.iterdir())[:limit]
    assert files, f"{folder}: no files"
    return [f.read_text(encoding="utf-8") for f in files]


def test_real_emr_text_goes_through_every_stage(tmp_path):
    texts = _real_unlabeled_texts(6)  # several hundred chars each, with spaces and Latin/units
    assert max(len(t) for t in texts) > 100
    cfg = tiny_model_cfg()
    cfg.bilm.max_len = 64
    cfg.bert.max_position = 66
    cfg.bert.window = 64
    cfg.bert.stride = 32
    metrics = pretrain_all(lambda: texts, cfg, tmp_path, seed=0)
    assert metrics["bilm.sentences_available"] >= len(texts)
    feats = load_featurizers(tmp_path, cfg)
    batch = texts[:2]
    T = max(len(t) for t in batch)
    assert feats["bilm"](batch).shape == (2, T, 16)
    out = feats["bert"](batch)
    assert out.shape == (2, T, 16)
    assert (out[0, : len(batch[0])].abs().sum(-1) > 0).all()
