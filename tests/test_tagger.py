"""The tagger: shapes, BIO constraints, loss falling, frozen featurizers, collation."""
import numpy as np
import pytest
import torch

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.features.dictionary import DICT_O_ID, DictionaryFeature, DictionaryTags, drop_tags, tags_for
from cemr.tagger import BiLMBNERTagger, Collator, build_tagger, make_collator, tagger_from_hparams
from cemr.tags import LabelSet, bio_to_spans
from tagger_fakes import FakeFeaturizer, tiny_lexicon, tiny_model_config, tiny_setup


def _model(with_features=False, seed=0):
    torch.manual_seed(seed)
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    kw = {}
    if with_features:
        cfg.bert.enabled = cfg.bilm.enabled = True
        kw = {"bert": FakeFeaturizer(6, seed=1), "bilm": FakeFeaturizer(4, seed=2)}
    tagger = build_tagger(cfg, labels, vocab, **kw)
    collate = make_collator(tagger, vocab, labels, tiny_lexicon())
    return tagger, collate, sents, labels


def test_collator_builds_padded_batches():
    tagger, collate, sents, labels = _model()
    batch = collate(sents[:3], weights=[1.0, 0.5, 2.0])
    b, t = batch.char_ids.shape
    assert b == 3 and t == max(len(s.text) for s in sents[:3])
    assert batch.mask.dtype == torch.bool and batch.mask.sum(1).tolist() == [len(s.text) for s in sents[:3]]
    assert batch.dict_ids.shape == (b, t) and batch.tag_ids.shape == (b, t)
    assert batch.weights.tolist() == [1.0, 0.5, 2.0]
    # gold tags round-trip to the sentence's spans
    for i, s in enumerate(sents[:3]):
        tags = labels.from_ids(batch.tag_ids[i, : len(s.text)].tolist())
        assert bio_to_spans(tags) == s.spans
    # lexicon terms are marked in the dictionary ids
    i = next(k for k, s in enumerate(sents[:3]) if "糖尿病" in s.text)
    pos = sents[i].text.index("糖尿病")
    dict_tags = tagger.dictionary.vocab.tags
    assert [dict_tags[j] for j in batch.dict_ids[i, pos : pos + 3].tolist()] == ["B-DIS", "I-DIS", "I-DIS"]
    assert (batch.dict_ids[~batch.mask] == 0).all()


def test_collator_uses_the_fold_lexicon_of_each_document():
    class Folded:
        def __init__(self):
            self.asked = []

        def for_doc(self, doc_id):
            self.asked.append(doc_id)
            return tiny_lexicon() if doc_id is None else None

    sents, labels, vocab = tiny_setup()
    folded = Folded()
    collate = Collator(vocab, labels, DictionaryTags(["DIS", "DRUG"]), folded)
    train_batch = collate(sents[:2])
    assert folded.asked == [sents[0].doc_id, sents[1].doc_id]
    assert (train_batch.dict_ids[train_batch.mask] == DICT_O_ID).all()  # that doc's lexicon: nothing
    raw = collate.from_texts(["患者有糖尿病"])
    assert folded.asked[-1] is None and raw.tag_ids is None
    assert raw.dict_ids[0].tolist() == [1, 1, 1, 2, 3, 3]


def test_collator_errors_name_the_sentence():
    sents, labels, vocab = tiny_setup()
    collate = Collator(vocab, labels)
    with pytest.raises(ValueError, match="'dx' sentence 3: empty"):
        collate([Sentence("dx", 3, 0, "", [])])
    with pytest.raises(ValueError, match="'dx' sentence 1: .*unknown tag 'B-XYZ'"):
        collate([Sentence("dx", 1, 0, "患者", [Span(0, 1, "XYZ")])])
    with pytest.raises(ValueError, match="overlaps"):
        collate([Sentence("dx", 2, 0, "患者有", [Span(0, 2, "DIS"), Span(1, 3, "DIS")])])


def test_shapes_loss_and_decode_with_all_features():
    tagger, collate, sents, labels = _model(with_features=True)
    batch = collate(sents[:4])
    b, t = batch.char_ids.shape
    assert tagger.input_dim == 8 + 6 + 4 + 4
    em = tagger.emissions(batch)
    assert em.shape == (b, t, labels.num_tags) and em.dtype == torch.float32
    loss = tagger(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert tagger.bert.table.weight.grad is None  # frozen featurizers get no gradient
    assert tagger.char_embedding.weight.grad is not None
    tagger.eval()
    tags = tagger.decode(batch)
    assert [len(x) for x in tags] == [len(s.text) for s in sents[:4]]
    out = tagger.infer(batch)
    tags2, marg = out.tags, out.marginals
    assert tags2 == tags and marg.shape == (b, t, labels.num_tags)
    assert torch.allclose(marg.sum(-1)[batch.mask], torch.ones(int(batch.mask.sum())), atol=1e-5)


def test_frozen_featurizers_stay_in_eval_mode_and_out_of_checkpoints():
    tagger, _, _, _ = _model(with_features=True)
    tagger.train()
    assert tagger.training and not tagger.bert.training and not tagger.bilm.training
    keys = tagger.checkpoint_state_dict().keys()
    assert not any(k.startswith(("bert.", "bilm.")) for k in keys) and "crf.transitions" in keys
    fresh = tagger_from_hparams(tagger.hparams, LabelSet.from_types(["DIS", "DRUG"]),
                                bert=tagger.bert, bilm=tagger.bilm)
    fresh.load_checkpoint_state(tagger.checkpoint_state_dict())
    for k, v in tagger.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    bad = dict(tagger.checkpoint_state_dict())
    del bad["gru.weight_hh_l0"]
    with pytest.raises(ValueError, match="gru.weight_hh_l0"):
        fresh.load_checkpoint_state(bad)


def test_trainable_featurizer_gets_gradients_and_is_checkpointed():
    torch.manual_seed(0)
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config(enabled=False)
    cfg.bert.enabled, cfg.bert.freeze = True, False
    tagger = build_tagger(cfg, labels, vocab, bert=FakeFeaturizer(6))
    collate = make_collator(tagger, vocab, labels)
    tagger(collate(sents[:2])).backward()
    assert tagger.bert.table.weight.grad is not None
    assert "bert.table.weight" in tagger.checkpoint_state_dict()


def test_invalid_bio_transitions_are_never_decoded():
    """Emissions that favour I-X everywhere (and I-Y after B-X) still decode to valid BIO."""
    labels = LabelSet.from_types(["X", "Y"])  # O B-X I-X B-Y I-Y
    tagger = BiLMBNERTagger(10, labels.num_tags, labels.allowed_transitions(), labels.allowed_start(),
                            char_dim=4, gru_hidden=4, attention_heads=2)
    # training cannot undo the constraint: an optimiser step moves the scores, the next use resets them
    with torch.no_grad():
        tagger.crf.transitions.fill_(5.0)
        tagger.crf.start_transitions.fill_(5.0)
    g = torch.Generator().manual_seed(0)
    em = torch.randn(64, 7, labels.num_tags, generator=g) * 3
    em[..., 2] += 4  # I-X
    em[..., 4] += 3  # I-Y
    mask = torch.ones(64, 7, dtype=torch.bool)
    mask[32:, 4:] = False
    tagger.constrain_crf()
    allowed = labels.allowed_transitions()
    for path in tagger.crf.decode(em, mask):
        assert labels.allowed_start()[path[0]]
        for a, b in zip(path, path[1:]):
            assert allowed[a, b], labels.from_ids([a, b])
    assert float(tagger.crf.transitions[0, 2].detach()) == -1e4  # O -> I-X
    assert float(tagger.crf.start_transitions[2].detach()) == -1e4


def test_loss_falls_on_a_tiny_corpus():
    tagger, collate, sents, labels = _model()
    batch = collate(sents[:5])
    opt = torch.optim.Adam(tagger.parameters(), lr=0.02)
    tagger.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = tagger(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]
    tagger.eval()
    pred = [bio_to_spans(labels.from_ids(p)) for p in tagger.decode(batch)]
    assert pred == [s.spans for s in sents[:5]]


def test_sample_weights_scale_the_loss():
    tagger, collate, sents, _ = _model()
    tagger.eval()
    nll = tagger.nll(collate(sents[:2]))
    loss = tagger(collate(sents[:2], weights=[0.0, 2.0]))
    assert torch.allclose(loss, (2.0 * nll[1]) / 2)


def test_predictions_do_not_depend_on_batch_padding():
    tagger, collate, sents, _ = _model(with_features=True)
    tagger.eval()
    long = max(sents, key=lambda s: len(s.text))
    short = min(sents, key=lambda s: len(s.text))
    alone = tagger.infer(collate([short]))
    padded = tagger.infer(collate([short, long]))
    n = len(short.text)
    assert alone.tags[0] == padded.tags[0]
    assert torch.allclose(alone.marginals[0, :n], padded.marginals[0, :n], atol=1e-5)
    assert torch.allclose(alone.sequence_log_prob[0], padded.sequence_log_prob[0], atol=1e-4)


def test_build_tagger_checks_features_against_the_config():
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    cfg.bilm.enabled = True
    with pytest.raises(ValueError, match="bilm.enabled is true"):
        build_tagger(cfg, labels, vocab)
    cfg.bilm.enabled = False
    with pytest.raises(ValueError, match="bert featurizer was given"):
        build_tagger(cfg, labels, vocab, bert=FakeFeaturizer())
    cfg.attention_heads = 3
    with pytest.raises(ValueError, match="attention_heads"):
        build_tagger(cfg, labels, vocab)


def test_char_embedding_initialised_from_vectors():
    from cemr.features.word2vec import CharVectors

    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    vectors = CharVectors(["患", "者"], np.arange(16, dtype=np.float32).reshape(2, 8))
    tagger = build_tagger(cfg, labels, vocab, char_vectors=vectors)
    assert tagger.char_init_rows == 2
    assert tagger.char_embedding.weight[vocab.stoi["者"]].tolist() == list(range(8, 16))


def test_dictionary_feature():
    feat = DictionaryFeature(["DIS", "DRUG"], dim=5, dropout=0.5)
    ids = torch.tensor([feat.vocab.encode(tags_for("患者有糖尿病", tiny_lexicon()))])
    assert ids.tolist() == [[1, 1, 1, 2, 3, 3]]
    assert feat(ids).shape == (1, 6, 5)
    with pytest.raises(ValueError, match="'B-SYM' at position 0: type not in"):
        feat.vocab.encode(["B-SYM"])
    assert tags_for("患者", None) == ["O", "O"]
    # feature dropout: only non-O, non-pad tags, at about the given rate, only in training
    big = torch.full((200, 50), 2)
    big[:, 40:] = 0
    dropped = drop_tags(big, 0.3, torch.Generator().manual_seed(0))
    rate = float((dropped[:, :40] == DICT_O_ID).float().mean())
    assert 0.25 < rate < 0.35 and (dropped[:, 40:] == 0).all()
    feat.eval()
    assert torch.equal(feat(ids), feat.embedding(ids))


def test_unsure_ranges_become_unobserved_tags_and_a_partial_loss():
    tagger, collate, sents, labels = _model()
    tagger.eval()
    plain = collate(sents[:3])
    assert plain.tag_observed is None  # gold: every tag observed, pytorch-crf's likelihood
    s0 = sents[0]
    partial = Sentence(s0.doc_id, s0.sent_id, s0.offset, s0.text, s0.spans, [(0, 2), (3, 4)])
    batch = collate([partial, *sents[1:3]])
    assert batch.tag_observed.shape == batch.mask.shape
    assert batch.tag_observed[0, :5].tolist() == [False, False, True, False, True]
    assert torch.equal(batch.tag_observed[1:], batch.mask[1:])
    nll_plain, nll_partial = tagger.nll(plain), tagger.nll(batch)
    assert torch.allclose(nll_plain[1:], nll_partial[1:], atol=1e-4)  # fully observed rows: same NLL
    assert nll_partial[0] < nll_plain[0]  # fewer constraints: more probability mass
    bad = Sentence(s0.doc_id, s0.sent_id, s0.offset, s0.text, s0.spans, [(0, len(s0.text) + 1)])
    with pytest.raises(ValueError, match="unsure range"):
        collate([bad])


def test_partial_labels_do_not_teach_o_where_they_are_unsure():
    """Trained on a sentence whose mention is left unsure (not O), the tagger keeps finding it from
    the gold sentences; the same mention given as O is unlearnt."""
    _, _, sents, labels = _model()
    target = next(s for s in sents if s.spans)
    (span, *_) = target.spans

    def train(pseudo):
        tagger, collate, _, _ = _model(seed=3)
        opt = torch.optim.Adam(tagger.parameters(), lr=0.02)
        data = list(sents[:6]) + [pseudo] * 6
        tagger.train()
        for _ in range(40):
            opt.zero_grad()
            tagger(collate(data)).backward()
            opt.step()
        tagger.eval()
        (pred,) = tagger.decode(collate([target]))
        return bio_to_spans(labels.from_ids(pred))

    as_o = Sentence("p", 0, 0, target.text, [])
    unsure = Sentence("p", 0, 0, target.text, [], [(span.start, span.end)])
    assert span in train(unsure)
    assert span not in train(as_o)


def test_eval_attention_equals_multihead_attention_and_decode_equals_pytorch_crf():
    tagger, collate, sents, _ = _model(with_features=True)
    tagger.eval()
    batch = collate(sents[:6])
    g = torch.Generator().manual_seed(0)
    h = torch.randn(len(batch), batch.mask.shape[1], tagger.output.in_features, generator=g)
    want, _ = tagger.attention(h, h, h, key_padding_mask=~batch.mask, need_weights=False)
    got = tagger.self_attention(h, batch.mask)
    real = batch.mask.unsqueeze(2)  # outputs at padding are never read
    assert torch.allclose(got * real, want * real, atol=1e-5)
    with torch.no_grad():
        em = tagger.emissions(batch)
        assert tagger.decode(batch) == tagger.crf.decode(em, batch.mask)
        out = tagger.infer(batch)
    assert out.tags == tagger.crf.decode(em, batch.mask)
    assert out.tag_ids.shape == batch.mask.shape and out.lengths.tolist() == batch.lengths.tolist()
