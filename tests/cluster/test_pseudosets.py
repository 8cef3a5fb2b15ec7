"""cluster.pseudosets: pseudo-label sets on disk (entity counts, the accumulate merge, held-out
scoring, samples)."""
from __future__ import annotations

import pytest

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import UNSURE_FIELD, ShardWriter, iter_sentences, write_shards
from cluster.pseudosets import entity_counts, merge_pseudo_dirs, pseudo_samples, score_against_heldout


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
