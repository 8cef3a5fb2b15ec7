"""Char bigram embeddings: tokens, lookup, word2vec training, persistence, and the registry path
(pretrain -> tagger -> model directory -> identical emissions)."""
import sys
from pathlib import Path

import pytest
import torch

from cemr.config import BigramConfig, load_config
from cemr.features.bigram import BOS, EOS, BigramFeaturizer, BigramSentences, bigram_tokens, train_bigram_featurizer
from cemr.fingerprint import pretrain_fingerprint
from cemr.modeldir import load_model, save_model
from cemr.pretrain import load_featurizers, pretrain_all
from cemr.tagger import build_tagger, make_collator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tagger_fakes
from tagger_fakes import tiny_model_config, tiny_setup  # noqa: E402

TEXTS = ["血压正常", "血常规正常", "患者血压高", "腹部平软"] * 5


def test_bigram_tokens_are_the_boundaries_of_the_text():
    assert bigram_tokens("血压高") == [BOS + "血", "血压", "压高", "高" + EOS]
    assert bigram_tokens("血") == [BOS + "血", "血" + EOS]
    assert bigram_tokens("") == []
    # markers never make a two-char token, so they cannot collide with a real bigram
    assert all(len(t) != 2 for t in (BOS + "血", "血" + EOS))


def test_long_texts_are_cut_into_pieces_each_with_its_markers():
    pieces = list(BigramSentences(["abcdefg"], max_len=3))
    assert pieces == [bigram_tokens("abc"), bigram_tokens("def"), bigram_tokens("g")]
    with pytest.raises(TypeError, match="expected str"):
        list(BigramSentences([1]))


def test_a_char_gets_the_bigram_ending_at_it_and_the_one_starting_at_it():
    bigrams = [BOS + "血", "血压", "压" + EOS]
    vectors = torch.arange(1, 7, dtype=torch.float32).reshape(3, 2)  # rows 1..3 of the embedding
    f = BigramFeaturizer(bigrams, 2, vectors.numpy())
    assert f.dim == 4 and f.frozen and not any(p.requires_grad for p in f.parameters())
    out = f(["血压", "压"])
    assert out.shape == (2, 2, 4)
    assert out[0, 0].tolist() == [1, 2, 3, 4]    # <s>血 | 血压
    assert out[0, 1].tolist() == [3, 4, 5, 6]    # 血压 | 压</s>
    assert out[1, 0].tolist() == [0, 0, 5, 6]    # <s>压 unseen: zero | 压</s>
    assert out[1, 1].tolist() == [0, 0, 0, 0]    # padding
    with pytest.raises(ValueError, match="vectors must be"):
        BigramFeaturizer(bigrams, 3, vectors.numpy())
    with pytest.raises(ValueError, match="duplicate"):
        BigramFeaturizer(["ab", "ab"], 2)


def test_word2vec_on_bigrams_is_reproducible_and_honours_min_count():
    cfg = BigramConfig(enabled=True, dim=6, min_count=5, epochs=2)
    a, metrics = train_bigram_featurizer(TEXTS, cfg, seed=3)
    b, _ = train_bigram_featurizer(lambda: iter(TEXTS), cfg, seed=3)
    assert a.bigrams == b.bigrams and torch.equal(a.embedding.weight, b.embedding.weight)
    assert "血压" in a.index and metrics["vocab_size"] == len(a.bigrams)
    assert all(len(t) == 2 or t.startswith(BOS) or t.endswith(EOS) for t in a.bigrams)
    rare = train_bigram_featurizer(TEXTS + ["罕见词"], cfg, seed=3)[0]
    assert "罕见" not in rare.index  # seen once, min_count 5
    with pytest.raises(ValueError, match="no bigrams"):
        train_bigram_featurizer(["", ""], cfg)


def test_save_and_load_give_the_same_features_and_missing_files_are_named(tmp_path):
    f, _ = train_bigram_featurizer(TEXTS, BigramConfig(enabled=True, dim=4, min_count=1, epochs=1), seed=0)
    f.save(tmp_path / "bigram")
    g = BigramFeaturizer.load(tmp_path / "bigram")
    assert g.bigrams == f.bigrams and g.frozen
    assert torch.equal(f(TEXTS[:3]), g(TEXTS[:3]))
    assert BigramFeaturizer.load(tmp_path / "bigram", freeze=False).embedding.weight.requires_grad
    (tmp_path / "bigram" / "bigrams.json").unlink()
    with pytest.raises(FileNotFoundError, match="bigrams.json: missing"):
        BigramFeaturizer.load(tmp_path / "bigram")


def _cfg(**bigram):
    cfg = tiny_model_config(enabled=False)
    cfg.word2vec.dim, cfg.word2vec.epochs = 8, 1
    cfg.bigram.enabled, cfg.bigram.dim, cfg.bigram.min_count, cfg.bigram.epochs = True, 4, 1, 1
    for k, v in bigram.items():
        setattr(cfg.bigram, k, v)
    return cfg


def test_pretrained_bigrams_join_the_tagger_and_its_model_directory(tmp_path):
    sents, labels, vocab = tiny_setup()
    cfg = _cfg()
    metrics = pretrain_all(lambda: [s.text for s in sents], cfg, tmp_path / "pretrain")
    assert (tmp_path / "pretrain" / "bigram" / "weights.safetensors").is_file() and metrics["bigram.vocab_size"] > 0
    feats = load_featurizers(tmp_path / "pretrain", cfg)
    assert list(feats) == ["bigram"]
    tagger = build_tagger(cfg, labels, vocab, **feats).eval()
    assert tagger.input_dim == cfg.char_dim + 8 and tagger.hparams["featurizer_dims"] == {"bigram": 8}
    assert tagger.feature_cache("bigram") is None  # a lookup: never cached
    path = save_model(tmp_path / "model", tagger, vocab=vocab, labels=labels, model_config=cfg)
    loaded = load_model(path)  # by class path, no featurizer_classes
    assert type(loaded.tagger.bigram) is BigramFeaturizer and loaded.tagger.bigram.frozen
    batch = make_collator(tagger, vocab, labels).from_texts([s.text for s in sents[:4]])
    assert torch.equal(tagger.emissions(batch), loaded.tagger.emissions(batch))


def test_freeze_false_fine_tunes_the_vectors(tmp_path):
    sents, labels, vocab = tiny_setup()
    cfg = _cfg(freeze=False)
    pretrain_all(lambda: [s.text for s in sents], cfg, tmp_path / "pretrain")
    tagger = build_tagger(cfg, labels, vocab, **load_featurizers(tmp_path / "pretrain", cfg))
    assert tagger.bigram.embedding.weight.requires_grad and not tagger.bigram.frozen
    before = tagger.bigram.embedding.weight.detach().clone()
    batch = make_collator(tagger, vocab, labels)(sents[:4])
    opt = torch.optim.SGD([p for p in tagger.parameters() if p.requires_grad], lr=0.5)
    tagger.train()
    tagger(batch).backward()
    opt.step()
    after = tagger.bigram.embedding.weight.detach()
    assert not torch.equal(before[1:], after[1:]) and torch.equal(after[0], before[0])  # row 0 stays zero


def test_the_bigram_section_is_fingerprinted_only_when_enabled():
    off = pretrain_fingerprint(load_config(None, []), "p").parts
    on = pretrain_fingerprint(load_config(None, ["model.bigram.enabled=true"]), "p").parts
    assert "bigram" not in off and "bigram" in on
    assert on["bigram"]["config"]["model.bigram.dim"] == 50
    assert "model.bigram.freeze" not in on["bigram"]["config"]  # how it is used, not how it is pretrained
    assert {k: v for k, v in on.items() if k != "bigram"} == off  # turning it on changes nothing else
