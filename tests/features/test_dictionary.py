"""The dictionary feature's match sets (model.dictionary.match_sets): slots, the feature, collation,
out-of-fold lexicons, feature dropout, the model directory and the ensemble check."""
import sys
from pathlib import Path

import pytest
import torch

from cemr.config import ModelConfig
from cemr.features.dictionary import (DICT_O_ID, DictionaryFeature, DictionaryTags, match_sets_for, sets_tensor,
                                     tags_and_sets_for, tags_for)
from cemr.lexicon import Lexicon
from cemr.modeldir import load_model, save_model
from cemr.tagger import Collator, build_tagger, make_collator, tagger_from_hparams
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tagger_fakes
from tagger_fakes import tiny_lexicon, tiny_model_config, tiny_setup  # noqa: E402

NESTED = Lexicon({"糖尿病": "DIS", "尿病": "DIS", "病": "DIS", "青霉素": "DRUG"})


def _slots(vocab, text, lex):
    """Match-set slots per char as readable names ``B-DIS`` etc."""
    nt = len(vocab.types)
    names = [f"{k}-{t}" for k in "BMES" for t in vocab.types]
    assert len(names) == vocab.set_size == 4 * nt
    return [[names[i] for i in row] for row in match_sets_for(text, lex, vocab)]


def test_slots_cover_every_term_over_each_char():
    vocab = DictionaryTags(["DIS", "DRUG"])
    got = _slots(vocab, "患糖尿病用青霉素", NESTED)
    assert got == [[], ["B-DIS"], ["B-DIS", "M-DIS"], ["E-DIS", "S-DIS"], [], ["B-DRUG"], ["M-DRUG"], ["E-DRUG"]]
    # BMM saw only 糖尿病 and 青霉素; 尿病 and 病 reach the tagger through the sets alone
    text = "患糖尿病用青霉素"
    assert tags_and_sets_for(text, NESTED, vocab) == (tags_for(text, NESTED), match_sets_for(text, NESTED, vocab))
    assert match_sets_for("患者", None, vocab) == [[], []]
    with pytest.raises(ValueError, match="type 'SYM', not in the dictionary feature's types"):
        match_sets_for("发热", Lexicon({"发热": "SYM"}), vocab)


def test_sets_tensor_is_a_padded_multi_hot():
    out = sets_tensor([[[0, 3], [1]], [[2]]], 3, 4)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32
    assert out[0, 0].tolist() == [1, 0, 0, 1] and out[0, 1].tolist() == [0, 1, 0, 0]
    assert out[1, 0].tolist() == [0, 0, 1, 0] and out[0, 2].sum() == 0 and out[1, 1:].sum() == 0
    assert sets_tensor([[[], []]], 2, 4).sum() == 0


def test_feature_adds_the_projected_sets_and_refuses_a_mismatch():
    torch.manual_seed(0)
    feat = DictionaryFeature(["DIS", "DRUG"], dim=5, dropout=0.0, match_sets=True).eval()
    ids = torch.tensor([[1, 2, 3]])
    sets = torch.zeros(1, 3, 8)
    sets[0, 1, 0] = 1.0
    out = feat(ids, sets)
    assert torch.allclose(out, feat.embedding(ids) + sets @ feat.set_projection.weight.T)
    assert torch.equal(out[0, 0], feat.embedding(ids)[0, 0])  # an empty set adds nothing
    assert feat.hparams() == {"types": ["DIS", "DRUG"], "dim": 5, "dropout": 0.0, "match_sets": True}
    with pytest.raises(ValueError, match="expected sets of shape"):
        feat(ids)
    with pytest.raises(ValueError, match="expected sets of shape"):
        feat(ids, torch.zeros(1, 3, 4))
    plain = DictionaryFeature(["DIS", "DRUG"], dim=5)
    assert "match_sets" not in plain.hparams() and plain.set_projection is None
    with pytest.raises(ValueError, match="built without them"):
        plain(ids, sets)


def test_dropout_removes_a_chars_tag_and_set_together():
    torch.manual_seed(0)
    feat = DictionaryFeature(["DIS"], dim=3, dropout=0.5, match_sets=True).train()
    ids = torch.full((64, 20), 2)
    sets = torch.ones(64, 20, 4)
    seen = {}

    def spy(module, args, out):
        seen["sets"] = args[0]

    feat.set_projection.register_forward_hook(spy)
    out = feat(ids, sets)
    kept = seen["sets"].sum(-1) > 0  # (B, T): chars whose set survived
    tag_kept = (out - feat.embedding(torch.full_like(ids, DICT_O_ID)) - feat.set_projection(seen["sets"])).abs().sum(-1) > 1e-6
    assert torch.equal(kept, tag_kept)  # tag and set dropped at the same chars
    assert 0.4 < float(kept.float().mean()) < 0.6
    feat.eval()
    assert torch.equal(feat(ids, sets), feat.embedding(ids) + feat.set_projection(sets))


def test_collator_builds_sets_from_the_documents_lexicon_view():
    class Folded:
        def for_doc(self, doc_id):
            return NESTED if doc_id is None else Lexicon({"青霉素": "DRUG"})

    sents, labels, vocab = tiny_setup()
    collate = Collator(vocab, labels, DictionaryTags(["DIS", "DRUG"]), Folded(), match_sets=True)
    i = next(k for k, s in enumerate(sents) if "糖尿病" in s.text)
    train = collate([sents[i]])
    assert train.match_sets.shape == (1, len(sents[i].text), 8)
    dis_slots = [0, 2, 4, 6]  # B/M/E/S of DIS: the training doc's out-of-fold lexicon has no DIS term
    assert train.match_sets[0][:, dis_slots].sum() == 0
    raw = collate.from_texts(["患糖尿病", "病"])
    assert raw.match_sets.shape == (2, 4, 8)
    assert raw.match_sets[0, 3].nonzero().flatten().tolist() == [4, 6]  # E-DIS, S-DIS
    assert raw.match_sets[1, 0].nonzero().flatten().tolist() == [6] and raw.match_sets[1, 1:].sum() == 0
    assert Collator(vocab, labels, DictionaryTags(["DIS"]), NESTED).from_texts(["病"]).match_sets is None
    with pytest.raises(ValueError, match="need the dictionary tags"):
        Collator(vocab, labels, None, None, match_sets=True)


def _match_set_tagger():
    torch.manual_seed(3)
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    cfg.dictionary.match_sets = True
    tagger = build_tagger(cfg, labels, vocab, dictionary_types=["DIS", "DRUG"])
    return tagger, sents, labels, vocab, cfg


def test_tagger_trains_saves_and_loads_with_match_sets(tmp_path):
    tagger, sents, labels, vocab, cfg = _match_set_tagger()
    assert tagger.dictionary.match_sets and tagger.hparams["dictionary"]["match_sets"] is True
    collate = make_collator(tagger, vocab, labels, tiny_lexicon())
    batch = collate(sents)
    assert batch.match_sets is not None
    opt = torch.optim.Adam(tagger.parameters(), lr=0.05)
    before = tagger.dictionary.set_projection.weight.detach().clone()
    tagger.train()
    for _ in range(3):
        opt.zero_grad()
        loss = tagger(batch)
        loss.backward()
        opt.step()
    assert not torch.equal(before, tagger.dictionary.set_projection.weight)  # the projection learns
    tagger.eval()
    path = save_model(tmp_path / "m", tagger, vocab=vocab, labels=labels, lexicon=tiny_lexicon(),
                      model_config=cfg)
    loaded = load_model(path, "cpu")
    assert loaded.tagger.dictionary.match_sets
    texts = [s.text for s in sents]
    a, b = tagger.infer(collate.from_texts(texts)), loaded.tagger.infer(loaded.collator().from_texts(texts))
    assert a.tags == b.tags and torch.equal(a.marginals, b.marginals)
    # the sets change the emissions: the same weights without them give other scores
    rebuilt = tagger_from_hparams(tagger.hparams, labels)
    assert rebuilt.dictionary.match_sets
    no_sets = {**tagger.hparams, "dictionary": {k: v for k, v in tagger.hparams["dictionary"].items() if k != "match_sets"}}
    assert not tagger_from_hparams(no_sets, labels).dictionary.match_sets  # models saved before the option


def test_ensemble_refuses_members_that_differ_in_match_sets(tmp_path):
    from cemr.ensemble import EnsembleError, load_ensemble

    with_sets, sents, labels, vocab, cfg = _match_set_tagger()
    plain_cfg = tiny_model_config()
    plain = build_tagger(plain_cfg, labels, vocab, dictionary_types=["DIS", "DRUG"])
    a = save_model(tmp_path / "a", with_sets.eval(), vocab=vocab, labels=labels, lexicon=tiny_lexicon(), model_config=cfg)
    b = save_model(tmp_path / "b", plain.eval(), vocab=vocab, labels=labels, lexicon=tiny_lexicon(),
                   model_config=plain_cfg)
    with pytest.raises(EnsembleError, match="match sets"):
        load_ensemble([a, b], "cpu")
    from cemr.predictor import Predictor

    texts = [s.text for s in sents]
    both = load_ensemble([a, a], "cpu").predict_sentences(texts)
    single = Predictor.load(a, "cpu").predict_sentences(texts)
    assert [p.spans for p in both] == [p.spans for p in single]  # two equal members: the member itself


def test_config_key_documented_and_off_by_default():
    assert ModelConfig().dictionary.match_sets is False
