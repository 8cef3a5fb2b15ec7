"""Selection for review: below-threshold rows only, most uncertain first, duplicates merged, every row counted."""
from __future__ import annotations

import json

import pytest
from review_fixtures import write_round

from cemr.corpus.document import CorpusError, Span
from cemr.review.select import (SelectionReport, attach_predictions, select_from_predictions,
                                select_from_round)

ROWS = [
    {"doc_id": "a", "sent_id": 0, "text": "患者发热三天。", "status": "kept", "confidence": 0.95,
     "predictions": [(2, 4, "SYM", 0.95)]},
    {"doc_id": "a", "sent_id": 1, "text": "咳嗽伴胸痛。", "status": "below_threshold", "confidence": 0.40,
     "predictions": [(0, 2, "SYM", 0.4), (3, 5, "SYM", 0.8)]},
    {"doc_id": "b", "sent_id": 0, "text": "既往高血压。", "status": "below_threshold", "confidence": 0.60,
     "predictions": [(2, 5, "DIS", 0.6)]},
    {"doc_id": "c", "sent_id": 3, "text": "咳嗽 伴胸痛。", "status": "below_threshold", "confidence": 0.20,
     "predictions": [(0, 2, "SYM", 0.2)]},  # the text of a#1 but for a space: one task, this one
    {"doc_id": "d", "sent_id": 0, "text": "无特殊。", "status": "below_threshold", "confidence": None},
    {"doc_id": "e", "sent_id": 0, "text": "x", "status": "failed", "confidence": None},
]


def test_below_threshold_rows_ranked_by_uncertainty_deduplicated_and_all_counted(tmp_path):
    write_round(tmp_path / "r2", ROWS, with_predictions=True, files=2)
    report = SelectionReport()
    items = select_from_round(tmp_path / "r2", report=report)
    assert [it.id for it in items] == ["c#3", "b#0", "d#0"]  # 0.8, 0.4, then nothing to score
    assert items[0].uncertainty == pytest.approx(0.8)
    assert items[0].provenance["duplicates"] == 1 and items[0].provenance["duplicate_ids"] == ["a#1"]
    assert items[0].provenance["round"] == 2 and items[0].provenance["shard_row"].endswith("part-00001.parquet:0")
    assert items[0].predictions[0].span == Span(0, 2, "SYM")
    assert items[2].uncertainty is None
    assert report.read == len(ROWS) == sum(report.outcomes.values())
    assert +report.outcomes == {"selected": 3, "duplicate": 1, "not_below_threshold": 2}
    assert report.statuses == {"kept": 1, "below_threshold": 4, "failed": 1}


def test_limit_keeps_the_most_uncertain_and_counts_the_rest(tmp_path):
    write_round(tmp_path / "r2", ROWS, with_predictions=True)
    report = SelectionReport()
    items = select_from_round(tmp_path / "r2" / "pseudo" / "all", limit=1, report=report)
    assert [it.id for it in items] == ["c#3"]
    assert report.outcomes["over_limit"] == 2


def test_shards_without_predictions_get_them_from_the_model(tmp_path):
    write_round(tmp_path / "r2", ROWS)
    items = select_from_round(tmp_path / "r2")
    assert all(it.predictions is None for it in items)

    class FakePredictor:
        def predict_sentences(self, texts, batch_size):
            from cemr.predictor import Prediction, SentencePrediction
            return [SentencePrediction([Prediction(Span(0, 1, "SYM"), 0.3)], 0.3) for _ in texts]

    items = attach_predictions(items, FakePredictor())
    assert all(it.predictions[0].span == Span(0, 1, "SYM") for it in items)


def test_a_directory_without_round_shards_is_named(tmp_path):
    with pytest.raises(CorpusError, match="pseudo/all"):
        select_from_round(tmp_path)


def _predict_output(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_predict_output_gives_the_records_with_an_entity_below_threshold(tmp_path):
    ent = lambda s, e, t, c: {"start": s, "end": e, "type": t, "confidence": c}  # noqa: E731
    path = _predict_output(tmp_path / "pred.jsonl", [
        {"id": "n1", "text": "发热咳嗽", "entities": [ent(0, 2, "SYM", 0.9), ent(2, 4, "SYM", 0.3)]},
        {"id": "n2", "text": "头痛", "entities": [ent(0, 2, "SYM", 0.95)]},
        {"id": "n3", "text": "无", "entities": []},
        {"id": "n4", "text": "胸闷", "entities": [ent(0, 2, "SYM", 0.5)]},
        {"id": "n5", "text": "胸闷", "entities": [ent(0, 9, "SYM", 0.5)]},  # beyond the text: span dropped
        {"id": "n6", "text": "胸痛", "entities": [ent(0, 2, "SYM", "high")]},  # not a confidence: rejected
    ])
    report = SelectionReport()
    items = select_from_predictions(path, threshold=0.8, report=report)
    assert [it.id for it in items] == ["n1", "n4"]
    assert items[0].provenance["record"] == f"{path}:1" and items[0].uncertainty == pytest.approx(0.7)
    assert +report.outcomes == {"selected": 2, "not_below_threshold": 3}  # n2 confident; n3, n5 no entity
    r = report.reader
    assert (r.read, r.kept, r.rejected, r.spans_dropped) == (6, 5, 1, 2)
    assert any(f"{path}:6" in line for line in r.issue_lines(10))
