"""The frozen-featurizer cache: LRU bounds, batch assembly, identical training with and without it,
no leak across featurizers, off for trainable featurizers."""
import copy
import pickle

import pytest
import torch

from cemr.config import TrainConfig
from cemr.features.bilm import BiLMFeaturizer, CharLM, CharVocab as LMVocab
from cemr.features.cache import FeatureCache, cached_features, elements_for_mb
from cemr.tagger import build_tagger, make_collator
from cemr.training import predict_spans, train_tagger
from tagger_fakes import FakeFeaturizer, tiny_lexicon, tiny_model_config, tiny_setup


def test_lru_evicts_oldest_within_the_element_budget():
    cache = FeatureCache(max_elements=12)  # 3 texts of 2 chars x 2 dims
    for text in ("ab", "cd", "ef"):
        cache.put(text, torch.ones(2, 2))
    assert cache.elements == 12 and len(cache) == 3
    assert cache.get("ab") is not None  # "ab" now most recent
    cache.put("gh", torch.zeros(2, 2))
    assert "cd" not in cache and {"ab", "ef", "gh"} == {t for t in ("ab", "ef", "gh") if t in cache}
    assert cache.elements == 12
    cache.put("toolongtext", torch.zeros(11, 2))  # bigger than the whole budget: not stored
    assert "toolongtext" not in cache and len(cache) == 3
    assert (cache.hits, cache.misses) == (1, 0)
    assert cache.get("zz") is None and cache.misses == 1


def test_put_checks_shapes_and_width():
    cache = FeatureCache(100)
    with pytest.raises(ValueError, match="3 chars"):
        cache.put("abc", torch.zeros(2, 4))
    cache.put("abc", torch.zeros(3, 4))
    with pytest.raises(ValueError, match="4-dim"):
        cache.put("de", torch.zeros(2, 5))
    with pytest.raises(ValueError):
        FeatureCache(-1)
    assert elements_for_mb(1) == 2**18 and elements_for_mb(0) == 0


def test_cached_features_computes_only_misses_and_pads_with_zeros():
    fake = FakeFeaturizer(5, seed=3)
    cache = FeatureCache(10_000)
    texts = ["患者有糖尿病", "肺炎", "患者有糖尿病"]
    direct = fake(texts)  # (3, 6, 5)
    got = cached_features(cache, fake, texts)
    assert fake.calls == 2 and torch.equal(got, direct)
    assert got.shape == (3, 6, 5) and torch.all(got[1, 2:] == 0)
    again = cached_features(cache, fake, ["肺炎", "胃炎"])
    assert fake.calls == 3  # only "胃炎" was computed
    assert torch.equal(again, fake(["肺炎", "胃炎"]))


def _tagger(cache_mb, bert_frozen=True, seed=0):
    torch.manual_seed(seed)
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    cfg.bert.enabled = cfg.bilm.enabled = True
    cfg.bert.freeze = bert_frozen
    cfg.feature_cache_mb = cache_mb
    tagger = build_tagger(cfg, labels, vocab, bert=FakeFeaturizer(6, seed=1, frozen=bert_frozen),
                          bilm=FakeFeaturizer(4, seed=2))
    return tagger, make_collator(tagger, vocab, labels, tiny_lexicon()), sents, labels


def test_training_with_and_without_cache_is_identical():
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.02, patience=0, seed=5, device="cpu")
    runs = []
    for mb in (0, 64):
        tagger, collate, sents, labels = _tagger(mb)
        result = train_tagger(tagger, sents[:10], sents[10:], cfg, "cpu", collate=collate, log=lambda m: None)
        preds = predict_spans(tagger, sents, collate, labels, torch.device("cpu"))
        runs.append((tagger, [h["train_loss"] for h in result.history], preds))
    (plain, loss0, pred0), (cached, loss1, pred1) = runs
    assert loss0 == pytest.approx(loss1, rel=1e-6, abs=1e-7)
    assert pred0 == pred1
    assert plain.feature_cache("bilm") is None
    cache = cached.feature_cache("bilm")
    assert cache is not None and cache.hits > 0 and len(cache) == len({s.text for s in sents})
    # epochs 2.. never called the featurizer again: every text was already cached
    assert cached.bilm.calls < plain.bilm.calls


def test_caches_are_per_featurizer_and_dropped_when_replaced():
    tagger, collate, sents, _ = _tagger(64)
    tagger.eval()
    tagger.decode(collate(sents[:3]))
    bert_cache, bilm_cache = tagger.feature_cache("bert"), tagger.feature_cache("bilm")
    assert bert_cache is not bilm_cache and bert_cache.dim == 6 and bilm_cache.dim == 4
    tagger.bilm = FakeFeaturizer(4, seed=9)  # another module under the same name
    fresh = tagger.feature_cache("bilm")
    assert fresh is not bilm_cache and len(fresh) == 0
    em = tagger.emissions(collate(sents[:3]))
    ref, _, _, _ = _tagger(0)
    ref.load_state_dict(tagger.state_dict())
    ref.bilm = tagger.bilm
    ref.eval()
    assert torch.allclose(em, ref.emissions(collate(sents[:3])), atol=1e-6)
    # pickling / deep copies never carry a cache along
    assert copy.deepcopy(tagger)._feature_caches == {}
    assert pickle.loads(pickle.dumps(tagger))._feature_caches == {}


def test_trainable_featurizer_is_never_cached():
    tagger, collate, sents, _ = _tagger(64, bert_frozen=False)
    tagger.train()
    loss = tagger(collate(sents[:4]))
    loss.backward()
    assert tagger.feature_cache("bert") is None and tagger.feature_cache("bilm") is not None
    assert tagger.bert.table.weight.grad is not None


def test_real_bilm_featurizer_gives_the_same_rows_alone_and_in_a_batch():
    torch.manual_seed(0)
    texts = ["患者有糖尿病，服用胰岛素", "肺炎", "今日复查好转"]
    vocab = LMVocab.build(texts)
    bilm = BiLMFeaturizer(vocab, CharLM(len(vocab), 8, 8), CharLM(len(vocab), 8, 8))
    cache = FeatureCache(10_000)
    cached_features(cache, bilm, texts[1:2])  # "肺炎" computed alone
    got = cached_features(cache, bilm, texts)  # the other two computed together
    assert torch.allclose(got, bilm(texts), atol=1e-6)
