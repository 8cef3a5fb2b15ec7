"""One inference path for raw documents: ``cemr predict``, ``cemr evaluate``, the bootstrap's and
``cemr train``'s evaluation, ``jobs.predict`` / ``jobs.evaluate``'s actors and the MLflow pyfunc give
identical spans on the same documents (one longer than 1,000 chars), and evaluation text is split as
unseen text is, gold mapped on afterwards (a span a cut falls inside is a miss, never dropped)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import SplitStats, split_document
from cemr.inference import evaluate_documents, predict_files, tag_records
from cemr.metrics import evaluate
from cemr.predictor import Predictor
from tagger_fakes import tiny_documents, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


def _documents():
    parts = tiny_documents(80, seed=3)
    long_text, long_spans = "", []
    for d in parts:  # one record of ~1,500 chars: many sentences, cut by max_len 64 as well
        long_spans += [s.shifted(len(long_text)) for s in d.spans]
        long_text += d.text
    long_doc = Document("long", long_text, long_spans)
    assert len(long_doc.text) > 1000
    return [long_doc, *tiny_documents(5, seed=4)]


def _spans(preds):
    return {k: [(p.span.start, p.span.end, p.span.type, p.confidence) for p in v] for k, v in preds.items()}


def _assert_same(got, reference, tol=1e-5):
    """Identical spans per document, confidences within ``tol`` (output files round them: comparing
    rounded values would fail on a rounding boundary, e.g. 0.995245 -> 0.99525 vs 0.9952449 -> 0.99524)."""
    assert {k: [e[:3] for e in v] for k, v in got.items()} == {k: [e[:3] for e in v] for k, v in reference.items()}
    for k, v in reference.items():
        assert [e[3] for e in got[k]] == pytest.approx([e[3] for e in v], abs=tol), k


def test_every_path_gives_the_same_spans(model_dir, tmp_path):
    docs = _documents()
    predictor = Predictor.load(model_dir)
    assert predictor.max_len == 64  # from the model directory, not a default
    reference = _spans(predictor.predict_documents(docs))
    assert sum(len(v) for v in reference.values()) > 20  # the model finds entities

    # cemr predict (a file of cemr jsonl records)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": d.id, "text": d.text, "entities": []}, ensure_ascii=False) + "\n"
                           for d in docs), encoding="utf-8")
    predict_files(model_dir, [str(src)], tmp_path / "out.jsonl", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    _assert_same({r["id"]: [(e["start"], e["end"], e["type"], e["confidence"]) for e in r["entities"]]
                  for r in rows}, reference)

    # the pyfunc model and jobs.predict's actor (records given as plain texts)
    records = tag_records(predictor, [d.text for d in docs])
    _assert_same({d.id: [(e["start"], e["end"], e["type"], e["confidence"]) for e in recs]
                  for d, recs in zip(docs, records)}, reference)
    from jobs.predict import DocumentTagger

    actor = DocumentTagger(str(model_dir), "cpu", "entity_min_marginal")
    out = actor({"id": np.array([d.id for d in docs], dtype=object),
                 "text": np.array([d.text for d in docs], dtype=object)})
    _assert_same({i: [(e["start"], e["end"], e["type"], e["confidence"]) for e in json.loads(x)]
                  for i, x in zip(out["id"], out["entities"])}, reference)

    from cemr.serving import CemrPyfuncModel

    pyfunc = CemrPyfuncModel()
    pyfunc.load_context(SimpleNamespace(artifacts={"model_dir": str(model_dir)}))
    served = pyfunc.predict(None, [d.text for d in docs])
    assert served == [[{k: e[k] for k in ("start", "end", "type", "confidence")} for e in r] for r in records]


def test_evaluation_scores_what_prediction_finds(model_dir):
    docs = _documents()
    predictor = Predictor.load(model_dir)
    preds = predictor.predict_documents(docs)
    report = evaluate_documents(predictor, docs)
    assert report.to_dict() == evaluate(docs, {k: [p.span for p in v] for k, v in preds.items()}).to_dict()
    assert report.entities == sum(len(d.spans) for d in docs)

    # training's per-epoch dev score: prepared dev sentences (cut as unseen text) + the documents
    from cemr.training import evaluate_sentences

    sentences = [s for d in docs for s in split_document(d, predictor.max_len, guided=False)]
    assert [(s.doc_id, s.offset, s.text) for s in sentences] == \
        [(s.doc_id, s.offset, s.text) for s in predictor.split(docs)]
    collate = predictor.collate
    epoch_report = evaluate_sentences(predictor.tagger, sentences, collate, predictor.labels, predictor.device,
                                      documents=docs)
    assert epoch_report.micro == report.micro


def test_a_gold_span_a_cut_falls_inside_is_a_miss_not_dropped():
    text = "患者" + "高" * 10 + "血压" + "好转。"  # no punctuation inside: cut at max_len
    doc = Document("d", text, [Span(8, 14, "DIS")])
    stats = SplitStats()
    sents = split_document(doc, 10, stats, guided=False)
    assert [s.text for s in sents] == [text[:10], text[10:]]  # the cut unseen text gets
    assert stats.spans_dropped == 1 and all(not s.spans for s in sents)
    guided = split_document(doc, 10, guided=True)
    assert len(guided[0].spans) + len(guided[-1].spans) == 1  # gold-guided: the cut moved around it
    # scored on the document, the cut span is still gold: a miss
    report = evaluate([doc], {"d": []})
    assert report.micro.fn == 1 and report.entities == 1


def test_prepare_cuts_dev_and_test_as_unseen_text_and_keeps_every_gold_span(tmp_path):
    from cemr.config import load_config
    from cemr.corpus.readers import read_documents
    from cemr.pipeline import RunLayout, load_documents, load_sentences, prepare_data

    cfg = load_config(None, ["data.demo_documents=30", "data.demo_unlabeled=10", "data.dev_fraction=0.3",
                             "data.test_fraction=0.3", "data.max_sentence_len=12"])
    layout = RunLayout.of(tmp_path / "run")
    report = prepare_data(cfg, layout, log=lambda m: None)
    for split in ("dev", "test"):
        docs = load_documents(layout, split)
        sents = load_sentences(layout, split)
        assert docs and report["splits"][split]["entities_in_documents"] == sum(len(d.spans) for d in docs)
        # the sentences are exactly the predictor's split of the documents
        expected = [s for d in docs for s in split_document(Document(d.id, d.text), 12)]
        assert [(s.doc_id, s.offset, s.text) for s in sents] == [(s.doc_id, s.offset, s.text) for s in expected]
        in_sentences = sum(len(s.spans) for s in sents)
        crossing = report["splits"][split]["spans_crossing_split"]
        assert in_sentences + crossing == sum(len(d.spans) for d in docs)
        assert list(read_documents("jsonl", layout.data / "documents" / f"{split}.jsonl"))
    assert "spans_dropped_by_split" in report["splits"]["train"]
