"""cluster.pseudosets: pseudo-label sets on disk (entity counts, the accumulate merge, held-out
scoring, samples)."""
from __future__ import annotations

import pytest

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import UNSURE_FIELD, ShardWriter, iter_sentences, write_shards
from cluster.pseudosets import (
    entity_counts,
    merge_pseudo_dirs,
    pseudo_page,
    pseudo_samples,
    score_against_heldout,
)


def _sent(doc, i, spans=(), unsure=()):
    return Sentence(doc, i, 0, "患者头痛三天" + str(i), list(spans), list(unsure))


def test_accumulate_merge_keeps_the_first_rounds_labels(tmp_path):
    a, b = tmp_path / "r1", tmp_path / "r2"
    write_shards([_sent("u1", 0, [Span(2, 4, "症状和体征")]), _sent("u1", 1)], a, source="pseudo:r1")
    write_shards([_sent("u1", 0, [Span(0, 2, "身体部位")]), _sent("u2", 0)], b, source="pseudo:r2")
    assert merge_pseudo_dirs([str(a), str(b)], tmp_path / "merged") == 3
    got = {(s.doc_id, s.sent_id): s.spans for s in iter_sentences(tmp_path / "merged")}
    assert got == {("u1", 0): [Span(2, 4, "症状和体征")], ("u1", 1): [], ("u2", 0): []}


def test_entity_counts_and_heldout_scoring(tmp_path):
    kept = tmp_path / "kept"
    write_shards([_sent("h1", 0, [Span(2, 4, "症状和体征")]), _sent("h1", 1, [Span(0, 2, "身体部位")]),
                  _sent("x", 0, [Span(0, 1, "身体部位")])], kept, source="pseudo:r1")
    assert entity_counts(kept, status=None) == {"症状和体征": 1, "身体部位": 2}
    heldout = tmp_path / "heldout"
    write_shards([_sent("h1", 0, [Span(2, 4, "症状和体征")]), _sent("h1", 1, [Span(0, 3, "身体部位")]),
                  _sent("h2", 0, [Span(1, 2, "治疗")])], heldout, source="heldout_gold")
    prf = score_against_heldout(kept, heldout)
    assert (prf["tp"], prf["fp"], prf["fn"]) == (1, 1, 2)  # "x" has no gold: not scored
    assert prf["precision"] == pytest.approx(0.5) and prf["recall"] == pytest.approx(1 / 3)
    assert prf["per_type"] == {
        "治疗": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1},
        "症状和体征": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0, "fn": 0},
        "身体部位": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 1}}
    write_shards([], tmp_path / "empty")
    assert score_against_heldout(kept, tmp_path / "empty") is None
    assert score_against_heldout(kept, tmp_path / "missing") is None


def test_pseudo_samples_are_the_first_kept_sentences_with_their_labels(tmp_path):
    kept = tmp_path / "kept"
    with ShardWriter(kept, extra_fields=[UNSURE_FIELD]) as writer:
        writer.write(_sent("u1", 0, [Span(2, 4, "症状和体征")], [(0, 2)]), "pseudo:r1")
        for i in range(1, 5):
            writer.write(_sent("u1", i), "pseudo:r1")
    samples = pseudo_samples(kept, 3)
    assert [(s["doc_id"], s["sent_id"]) for s in samples] == [("u1", 0), ("u1", 1), ("u1", 2)]
    assert samples[0]["text"] == "患者头痛三天0" and samples[0]["unsure"] == [[0, 2]]
    assert samples[0]["spans"] == [{"start": 2, "end": 4, "type": "症状和体征"}]
    assert len(pseudo_samples(kept, 50)) == 5 and pseudo_samples(kept, 0) == []


def _kept_with_predictions(path, n):
    from cluster.pseudolabel import PREDICTIONS_FIELD

    with ShardWriter(path, extra_fields=[PREDICTIONS_FIELD]) as writer:
        for i in range(n):
            preds = [{"start": 2, "end": 4, "type": "症状和体征", "confidence": 0.95},
                     {"start": 0, "end": 2, "type": "身体部位", "confidence": 0.4}]
            writer.write(_sent("u1", i, [Span(2, 4, "症状和体征")]), "pseudo:r1", predictions=preds)


def test_pseudo_page_shows_the_first_kept_sentences_with_every_prediction(tmp_path):
    kept = tmp_path / "kept"
    _kept_with_predictions(kept, 30)
    page = pseudo_page(kept, 0.7, "Round 1: kept", n=3)
    assert page.count('<section class="doc"') == 3 and "u1 #0" in page and "u1 #3" not in page
    assert "患者头痛三天0" not in page  # the text is split by the entity marks ...
    assert ">头痛</mark>" in page and 'data-conf="0.950"' in page  # ... each entity with its confidence
    assert page.count('class="ent t1 low"') == 3  # below the threshold: outlined (dropped in entity mode)
    assert "<title>Round 1: kept</title>" in page
    assert pseudo_page(kept, 0.7, "t", n=50).count('<section class="doc"') == 30
    bare = tmp_path / "bare"
    write_shards([_sent("u1", 0)], bare, source="pseudo:r1")
    with pytest.raises(ValueError, match="no 'predictions' column"):
        pseudo_page(bare, 0.7, "t")
