"""The Ray Data pseudo-labeling pipeline with a fake predictor on a local 2-CPU Ray instance,
plus its pure pieces (no Ray needed)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fakes
from cemr.config import ClusterConfig, SelfTrainConfig
from cemr.corpus.document import Span
from cemr.corpus.shards import count_rows, iter_sentences, write_shards
from cemr.predictor import Prediction, SentencePrediction
from cluster.pseudolabel import (
    OUTPUT_SCHEMA,
    PseudoLabeler,
    PseudoLabelError,
    PseudoLabelFailed,
    check_failed_fraction,
    failure_kind,
    label_row,
    plan_blocks,
    pseudo_label,
    summarize_batch,
)
from cluster.runtime import GPUUnavailable

PREDICTOR = "fakes:KeywordPredictor"
N = 200
# a fifth of fakes.corpus fails by design (kinds 0 and 1): allowed here, not by the default limit
CLUSTER = ClusterConfig(actors=2, actor_num_cpus=0.5, batch_size=256, max_failed_fraction=0.5)
FAILURES = {"RuntimeError": N // 10, "ValueError": N // 10}  # BOOM raises, BAD gives a span too long


# --- pure pieces ------------------------------------------------------------------------------


def test_plan_blocks_gives_every_actor_work():
    assert plan_blocks(200, 2, 256) == (4, 50)  # small input: smaller batches, 2 per actor
    assert plan_blocks(100_000, 2, 256) == (391, 256)
    assert plan_blocks(10_000_000, 4, 256)[0] == 2000  # capped
    assert plan_blocks(0, 2, 256) == (1, 256)
    assert plan_blocks(3, 4, 256) == (8, 1)


def test_label_row_with_the_real_prediction_types():
    sent = SentencePrediction([Prediction(Span(2, 5, "疾病和诊断"), 0.9)], confidence=0.8, sequence_prob=0.5)
    row = label_row("既往高血压", sent, 0.7, "sentence")
    assert row["status"] == "kept" and row["spans"] == [{"start": 2, "end": 5, "type": "疾病和诊断"}]
    assert row["confidence"] == pytest.approx(0.8) and row["predicted"] == 1
    below = label_row("既往高血压", sent, 0.85, "sentence")
    assert below["status"] == "below_threshold" and below["spans"] == []
    # the model's predictions stay with the row (a reviewer's pre-annotations), kept or not
    assert below["predictions"] == [{"start": 2, "end": 5, "type": "疾病和诊断", "confidence": 0.9}]
    assert label_row("既往高血压", sent, 0.85, "entity")["status"] == "kept"


def test_label_row_partial_mode_leaves_dropped_and_unsure_chars_untagged():
    sent = SentencePrediction(
        [Prediction(Span(2, 5, "疾病和诊断"), 0.9), Prediction(Span(6, 8, "症状和体征"), 0.4)],
        confidence=0.3, sequence_prob=0.2,
        token_confidence=[0.99, 0.5, 0.95, 0.9, 0.92, 0.99, 0.4, 0.45, 0.99])
    row = label_row("既往高血压，咳嗽。", sent, 0.7, "partial")
    assert row["status"] == "kept" and row["spans"] == [{"start": 2, "end": 5, "type": "疾病和诊断"}]
    # char 1 (an unsure O) and the dropped mention 6..8 are unknown; the kept mention is not
    assert row["unsure"] == [{"start": 1, "end": 2}, {"start": 6, "end": 8}]
    assert "3/9 chars unsure" in row["reason"]
    assert label_row("既往高血压，咳嗽。", sent, 0.7, "entity")["unsure"] == []
    below = label_row("既往高血压，咳嗽。", sent, 0.95, "partial")
    assert below["status"] == "below_threshold" and below["unsure"] == []


@pytest.mark.parametrize(
    "text, item, match",
    [
        ("短", SentencePrediction([Prediction(Span(0, 4, "X"), 0.9)], 0.9), "does not fit"),
        ("既往高血压", SentencePrediction([Prediction(Span(0, 3, "X"), 0.9), Prediction(Span(2, 4, "Y"), 0.9)], 0.9),
         "overlap"),
        (None, SentencePrediction([], 0.9), "text is NoneType"),
        ("x", 42, "unexpected predictor output"),
        ("既往高血压", SentencePrediction([Prediction(Span(2, 5, "X"), 1.7)], 0.9), "probability"),
    ],
)
def test_label_row_records_bad_output_as_failed(text, item, match):
    row = label_row(text, item, 0.7, "sentence")
    assert row["status"] == "failed" and row["spans"] == [] and match in row["reason"]


def test_summarize_batch_counts_statuses_entities_and_labelers():
    table = pa.Table.from_pylist(
        [
            {"doc_id": "d", "sent_id": 0, "offset": 0, "text": "a", "source": "s", "status": "kept",
             "spans": [{"start": 0, "end": 1, "type": "X"}, {"start": 1, "end": 2, "type": "Y"}],
             "reason": "", "confidence": 0.9, "predicted": 2, "round": 1, "labeler": "h:1"},
            {"doc_id": "d", "sent_id": 1, "offset": 5, "text": "b", "source": "s", "status": "failed",
             "spans": [], "reason": "KeyError: 'x'", "confidence": None, "predicted": 0, "round": 1,
             "labeler": "h:2"},
        ],
        schema=OUTPUT_SCHEMA,
    )
    out = dict(zip(*summarize_batch(table).to_pydict().values()))
    assert out == {"entities=X": 1, "entities=Y": 1, "labeler=h:1": 1, "labeler=h:2": 1, "failed=KeyError": 1,
                   "status=failed": 1, "status=kept": 1, "chars=kept": 1, "chars=unsure": 0}
    partial = table.set_column(table.schema.get_field_index("unsure"), "unsure",
                               pa.array([[{"start": 0, "end": 1}], [{"start": 0, "end": 1}]], OUTPUT_SCHEMA.field("unsure").type))
    out = dict(zip(*summarize_batch(partial).to_pydict().values()))
    assert out["chars=unsure"] == 1  # the failed row's ranges are not counted


def test_failure_kind_is_the_error_type_of_the_reason():
    assert failure_kind("ValueError: predicted span does not fit") == "ValueError"
    assert failure_kind("torch.OutOfMemoryError: CUDA out of memory") == "torch.OutOfMemoryError"
    assert failure_kind("boom") == "other" and failure_kind(None) == "other"
    assert failure_kind("no type here: x") == "other"


def test_a_failing_batch_is_logged_once_then_labeled_row_by_row(tmp_path, caplog):
    """The labeler class without Ray: a batch with one raising sentence is logged once (error
    type, message, first row id), then its other rows are labeled one by one."""
    sents = [fakes.corpus(20)[i] for i in (12, 10, 13)]  # kinds 2, 0 (BOOM), 3
    batch = pa.table({"doc_id": [s.doc_id for s in sents], "sent_id": [s.sent_id for s in sents],
                      "offset": [s.offset for s in sents], "text": [s.text for s in sents]})
    labeler = PseudoLabeler(fakes.KeywordPredictor, str(tmp_path), "cpu", 0.7, "sentence", 1)
    with caplog.at_level("WARNING", logger="cluster.pseudolabel"):
        out = labeler(batch)
    warnings = [r.getMessage() for r in caplog.records if r.name == "cluster.pseudolabel"]
    assert len(warnings) == 1
    assert "batch of 3 sentences starting at doc3/0" in warnings[0]
    assert "RuntimeError: cannot tag BOOM" in warnings[0] and "one by one" in warnings[0]
    assert out.column("status").to_pylist() == ["kept", "failed", "kept"]
    assert out.column("reason").to_pylist()[1] == "RuntimeError: cannot tag BOOM"
    caplog.clear()
    with caplog.at_level("WARNING", logger="cluster.pseudolabel"):
        labeler(batch.slice(0, 1))
    assert not caplog.records  # a batch that labels is not logged


def test_too_many_failed_rows_stop_the_round():
    errors = [{"doc_id": "d1", "sent_id": 3, "reason": "RuntimeError: cannot tag"}]
    check_failed_fraction(1, 1, 100, 0.01, {"RuntimeError": 1}, errors, "out/all")  # at the limit: fine
    check_failed_fraction(1, 0, 0, 0.0, {}, [], "out/all")  # an empty pool
    with pytest.raises(PseudoLabelFailed, match=r"round 2: 2 of 100 sentences \(2.0%\) failed .* "
                                                r"cluster.max_failed_fraction=0.01.*RuntimeError': 2.*"
                                                r"d1/3: RuntimeError: cannot tag.*out/all") as err:
        check_failed_fraction(2, 2, 100, 0.01, {"RuntimeError": 2}, errors, "out/all")
    assert (err.value.failed, err.value.total, err.value.failures) == (2, 100, {"RuntimeError": 2})
    assert err.value.first_errors == errors and isinstance(err.value, PseudoLabelError)


def test_refuses_to_run_without_ray(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(PseudoLabelError, match="not initialised"):
        pseudo_label(tmp_path, tmp_path, tmp_path / "out", 0.7, CLUSTER, SelfTrainConfig(), 1)


def test_a_bad_selection_policy_stops_before_anything_runs(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # past the Ray check: refused before any Ray call
    with pytest.raises(PseudoLabelError, match=r"bad selection policy: threshold \(selftrain.threshold\) must be"):
        pseudo_label(tmp_path, tmp_path, tmp_path / "out", 1.5, CLUSTER, SelfTrainConfig(), 1)
    with pytest.raises(PseudoLabelError, match="selftrain.selection"):
        pseudo_label(tmp_path, tmp_path, tmp_path / "out", 0.7, CLUSTER, replace(SelfTrainConfig(), selection="x"), 1)
    assert not (tmp_path / "out").exists()


# --- the pipeline on Ray ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    """N sentences in 3 shards of the real sentence schema."""
    d = tmp_path_factory.mktemp("unlabeled")
    write_shards(fakes.corpus(N), d, rows_per_shard=70, source="unlabeled")
    assert count_rows(d) == N
    return d


def _model_dir(tmp_path: Path) -> Path:
    m = tmp_path / "model"
    m.mkdir()
    return m


@pytest.mark.ray
def test_pipeline_accounts_for_every_row(ray_local, unlabeled, tmp_path):
    model = _model_dir(tmp_path)
    res = pseudo_label(unlabeled, model, tmp_path / "r1", 0.7, CLUSTER, SelfTrainConfig(selection="sentence"), 1,
                       predictor=PREDICTOR)
    assert res.input_rows == N
    assert res.counts == fakes.expected_counts(N, "sentence")
    assert sum(res.counts.values()) == N
    assert res.entities_kept == {fakes.DISEASE: fakes.expected_entities(N, "sentence")}
    assert res.kept_after_cap == res.counts["kept"] and res.capped == 0
    assert res.sentences_per_s > 0

    # two actors, each loaded the predictor once and labeled part of the rows
    loads = (model / "loads.log").read_text(encoding="utf-8").split()
    assert len(loads) == 4 and loads[1::2] == ["cpu", "cpu"]
    assert not (model / "threads.log").exists()  # cluster.actor_threads unset: no num_threads passed
    assert len(res.rows_per_labeler) == 2 and all(n > 0 for n in res.rows_per_labeler.values())
    assert sum(res.rows_per_labeler.values()) == N

    # failed rows are counted by error type, and a few are quoted
    assert res.failures == FAILURES and res.metrics()["pseudo/failed/ValueError"] == N // 10
    assert len(res.first_errors) == 5
    assert all(e["reason"].startswith(("RuntimeError: ", "ValueError: ")) for e in res.first_errors)

    # every row is in all/ with its status; failures carry their reason
    table = pq.read_table(res.all_dir)
    assert table.num_rows == N and table.schema.names == OUTPUT_SCHEMA.names
    rows = {(r["doc_id"], r["sent_id"]): r for r in table.to_pylist()}
    assert len(rows) == N
    for i, sent in enumerate(fakes.corpus(N)):
        r = rows[(sent.doc_id, sent.sent_id)]
        assert r["text"] == sent.text and r["offset"] == sent.offset and r["round"] == 1
        if i % 10 == 0:
            assert r["status"] == "failed" and "RuntimeError: cannot tag BOOM" in r["reason"]
        elif i % 10 == 1:
            assert r["status"] == "failed" and "does not fit" in r["reason"]
        elif i % 10 in (2, 3, 4):
            assert r["status"] == "kept" and r["spans"] == [{"start": 2, "end": 5, "type": fakes.DISEASE}]
        elif i % 10 == 7:
            assert r["status"] == "below_threshold" and r["spans"] == [] and "0.400 < 0.70" in r["reason"]
            # "高血压伴头痛": both predictions stay with the row, the unsure one included
            assert [(p["start"], p["end"], p["type"], round(p["confidence"], 2)) for p in r["predictions"]] == \
                [(0, 3, fakes.DISEASE, 0.95), (4, 6, fakes.SYMPTOM, 0.4)]

    # kept/ is the pseudo-labeled set, readable by the shard reader
    kept = list(iter_sentences(res.kept_dir))
    assert len(kept) == res.counts["kept"]
    assert {s.text for s in kept} == {fakes.text_for(i) for i in range(N) if i % 10 in (2, 3, 4, 8, 9)}
    assert sum(len(s.spans) for s in kept) == fakes.expected_entities(N, "sentence")


@pytest.mark.ray
def test_entity_mode_with_a_sentence_cap_replaces_old_output(ray_local, unlabeled, tmp_path):
    model = _model_dir(tmp_path)
    out = tmp_path / "r2"
    (out / "all").mkdir(parents=True)
    pq.write_table(OUTPUT_SCHEMA.empty_table(), out / "all" / "stale.parquet")  # an earlier attempt
    cfg = SelfTrainConfig(selection="entity", max_pseudo_per_round=7)
    # GPUs asked for on a CPU-only cluster, with the fallback allowed: labeled on the CPU, and said so
    fallback = dict(actor_num_gpus=0.5, gpu_wait_s=0.5, cpu_fallback=True)
    res = pseudo_label(unlabeled, model, out, 0.7,
                       replace(CLUSTER, batch_size=32, actor_threads=1, actor_memory_mb=64, **fallback), cfg, 2,
                       predictor=PREDICTOR)
    assert (model / "threads.log").read_text(encoding="utf-8").split() == ["1", "1"]  # one load per actor
    assert (model / "loads.log").read_text(encoding="utf-8").split()[1::2] == ["cpu", "cpu"]
    assert res.cpu_fallback and res.num_gpus_per_actor == 0.0 and res.metrics()["pseudo/cpu_fallback"] == 1.0
    assert res.counts == fakes.expected_counts(N, "entity")
    assert not (out / "all" / "stale.parquet").exists()
    assert res.kept_after_cap == 7 and res.capped == res.counts["kept"] - 7
    assert res.cap_reasons == {"over max_pseudo_per_round=7": res.capped}
    kept = pq.read_table(res.kept_dir)
    assert kept.num_rows == 7 and set(kept.column("status").to_pylist()) == {"kept"}
    assert set(kept.column("source").to_pylist()) == {"pseudo:r2"}
    # the most confident first: all kept rows carry the 0.95 entity only
    assert all(spans == [{"start": s.find("高血压"), "end": s.find("高血压") + 3, "type": fakes.DISEASE}]
               for s, spans in zip(kept.column("text").to_pylist(), kept.column("spans").to_pylist()))
    assert res.entities_kept == {fakes.DISEASE: 7}


@pytest.mark.ray
def test_partial_mode_writes_unsure_ranges_that_the_readers_see(ray_local, unlabeled, tmp_path):
    res = pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r3", 0.7, CLUSTER,
                       SelfTrainConfig(selection="partial"), 3, predictor=PREDICTOR)
    assert res.counts == fakes.expected_counts(N, "entity")  # same sentences as entity selection
    kept = list(iter_sentences(res.kept_dir))
    assert len(kept) == res.counts["kept"]
    for s in kept:
        h = s.text.find("头痛")
        # "高血压伴头痛": the 0.95 disease is kept, the 0.4 symptom is left unsure, not O
        assert s.unsure == ([(h, h + 2)] if h >= 0 else [])
        assert [s.text[sp.start:sp.end] for sp in s.spans] == ["高血压"]
    assert sum(1 for s in kept if s.unsure) == sum(i % 10 == 7 for i in range(N))
    assert res.unsure_chars == 2 * sum(i % 10 == 7 for i in range(N))
    assert res.kept_chars == sum(len(s.text) for s in kept)
    assert res.metrics()["pseudo/unsure_chars"] == res.unsure_chars


@pytest.mark.ray
def test_empty_pool_gives_empty_readable_sets(ray_local, tmp_path):
    empty = tmp_path / "empty"
    write_shards([], empty, source="unlabeled")
    res = pseudo_label(empty, _model_dir(tmp_path), tmp_path / "r", 0.7, CLUSTER, SelfTrainConfig(), 1,
                       predictor=PREDICTOR)
    assert res.input_rows == 0 and res.counts == {"kept": 0, "below_threshold": 0, "failed": 0}
    assert list(iter_sentences(res.all_dir)) == [] and list(iter_sentences(res.kept_dir)) == []


@pytest.mark.ray
def test_actor_threads_must_be_positive(ray_local, unlabeled, tmp_path):
    with pytest.raises(PseudoLabelError, match="actor_threads"):
        pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r", 0.7, replace(CLUSTER, actor_threads=0),
                     SelfTrainConfig(), 1, predictor=PREDICTOR)


@pytest.mark.ray
def test_class_balance_needs_the_gold_distribution(ray_local, unlabeled, tmp_path):
    with pytest.raises(PseudoLabelError, match="type_share"):
        pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r", 0.7, CLUSTER,
                     SelfTrainConfig(class_balance=True), 1, predictor=PREDICTOR)


@pytest.mark.ray
def test_gpus_asked_for_on_a_cpu_cluster_fail_naming_them(ray_local, unlabeled, tmp_path):
    with pytest.raises(GPUUnavailable, match=r"pseudo-labeling .* asked for 1 CPU, 1 GPU .* has 2 CPU after "
                                             r"waiting .*cluster.actor_num_gpus.*cluster.cpu_fallback=true"):
        pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r", 0.7,
                     replace(CLUSTER, actor_num_gpus=0.5, gpu_wait_s=0.5), SelfTrainConfig(), 1, predictor=PREDICTOR)
    assert not (tmp_path / "model" / "loads.log").exists()  # failed before any actor started


@pytest.mark.ray
def test_a_round_with_too_many_failures_stops_with_the_first_errors(ray_local, unlabeled, tmp_path):
    with pytest.raises(PseudoLabelFailed, match=r"round 4: 40 of 200 sentences \(20.0%\) failed") as err:
        pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r", 0.7, replace(CLUSTER, max_failed_fraction=0.01),
                     SelfTrainConfig(), 4, predictor=PREDICTOR)
    assert (err.value.failed, err.value.total, err.value.failures) == (N // 5, N, FAILURES)
    assert len(err.value.first_errors) == 5 and count_rows(err.value.all_dir) == N  # every row kept for a look
    assert not (tmp_path / "r" / "kept").exists()  # nothing to train on was written


@pytest.mark.ray
def test_max_failed_fraction_must_be_a_fraction(ray_local, unlabeled, tmp_path):
    with pytest.raises(PseudoLabelError, match="max_failed_fraction must be between 0 and 1"):
        pseudo_label(unlabeled, _model_dir(tmp_path), tmp_path / "r", 0.7, replace(CLUSTER, max_failed_fraction=1.5),
                     SelfTrainConfig(), 1, predictor=PREDICTOR)

