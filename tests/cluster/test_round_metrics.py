"""cluster.round_metrics: the flat MLflow metrics of the stages, a round and the run's end, and
PseudoLabelResult.metrics, the one source of a round's pseudo/* metrics."""
from __future__ import annotations

import pytest

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.selection import SelectionPolicy
from cemr.selftrain import RoundRecord
from cluster.pseudolabel import PseudoLabelResult
from cluster.round_metrics import (
    calibration,
    calibration_items,
    f1_series,
    final_metrics,
    metric_key,
    pseudo_series,
    round_metrics,
    split_sentences,
    stage_metrics,
)

TEST = {"micro": {"precision": 0.55, "recall": 0.45, "f1": 0.5}, "per_type": {"身体部位": {"f1": 0.25}}}


def _pseudo(**kw) -> PseudoLabelResult:
    fields = dict(round=2, threshold=0.7, mode="sentence", input_rows=10,
                  counts={"kept": 4, "below_threshold": 5, "failed": 1}, entities_kept={"疾病和诊断": 3},
                  kept_after_cap=3, capped=1, rows_per_labeler={"a": 10}, seconds=0.1, sentences_per_s=100.0,
                  all_dir="all", kept_dir="kept", units=2, batch_size=4, actors=1, num_cpus_per_actor=1.0,
                  num_gpus_per_actor=0.0, kept_chars=40, unsure_chars=7, failures={"ValueError": 1})
    return PseudoLabelResult(**{**fields, **kw})


def test_pseudo_label_result_metrics_name_every_number_of_the_pass():
    m = _pseudo().metrics({"疾病和诊断": 5, "a(b)": 1}, {"precision": 0.9, "recall": 0.3, "f1": 0.45, "tp": 9})
    assert m == {
        "pseudo/kept": 4.0, "pseudo/below_threshold": 5.0, "pseudo/failed": 1.0, "pseudo/input_rows": 10.0,
        "pseudo/kept_after_cap": 3.0, "pseudo/capped": 1.0, "pseudo/sentences_per_s": 100.0,
        "pseudo/kept_chars": 40.0, "pseudo/unsure_chars": 7.0, "pseudo/cpu_fallback": 0.0,
        "pseudo/kept_entities/疾病和诊断": 3.0, "pseudo/failed/ValueError": 1.0,
        "pseudo/proposed_entities/疾病和诊断": 5.0, "pseudo/proposed_entities/a_b_": 1.0,
        "pseudo/precision": 0.9, "pseudo/recall": 0.3, "pseudo/f1": 0.45}
    bare = _pseudo().metrics()
    assert not any(k.startswith(("pseudo/proposed_entities", "pseudo/precision")) for k in bare)


def test_round_metrics_flatten_every_number_of_a_round():
    rec = RoundRecord(
        round=2, dev_f1=0.5, dev_precision=0.6, dev_recall=0.4, threshold=0.7, train_sentences=10,
        pseudo_sentences=4, seconds=12.0,
        extra={"dev": {"micro": {"precision": 0.6, "recall": 0.4, "f1": 0.5},
                       "per_type": {"疾病和诊断": {"precision": 1.0, "recall": 0.5, "f1": 0.667}}},
               "test": TEST,
               "times": {"train": 3.0, "pseudo_label": 2.0},
               "pseudo_metrics": _pseudo().metrics({"疾病和诊断": 5}, {"precision": 0.9, "recall": 0.3, "f1": 0.45},
                                                   {"疾病和诊断": {"precision": 0.8, "recall": 0.2, "f1": 0.32, "tp": 4}}),
               "pseudo_gold_per_type": {"疾病和诊断": {"precision": 0.1, "recall": 0.1, "f1": 0.1, "tp": 4}},
               "calibration": {"ece": 0.07, "unit": "entity"},
               "train": {"best_epoch": 2, "epochs_run": 3}},
    )
    m = round_metrics(rec)
    assert m["pseudo_gold/疾病和诊断/precision"] == 0.8 and m["pseudo_gold/疾病和诊断/recall"] == 0.2
    assert "pseudo_gold/疾病和诊断/tp" not in m and m["dev_ece"] == 0.07
    assert m["dev_f1"] == 0.5 and m["threshold"] == 0.7 and m["dev/疾病和诊断/f1"] == 0.667
    assert (m["test_f1"], m["test_precision"], m["test_recall"], m["test/身体部位/f1"]) == (0.5, 0.55, 0.45, 0.25)
    assert m["pseudo/kept"] == 4 and m["pseudo/below_threshold"] == 5 and m["pseudo/failed/ValueError"] == 1
    assert m["pseudo/kept_entities/疾病和诊断"] == 3 and m["pseudo/proposed_entities/疾病和诊断"] == 5
    assert m["pseudo/precision"] == 0.9 and m["pseudo/sentences_per_s"] == 100.0
    assert m["pseudo/kept_chars"] == 40 and m["pseudo/unsure_chars"] == 7
    assert m["time/train_s"] == 3.0 and m["time/round_s"] == 12.0 and m["train/epochs_run"] == 3
    gold_only = round_metrics(RoundRecord(round=0, dev_f1=0.1, extra={"calibration": {"ece": None}}))
    assert "threshold" not in gold_only
    assert not any(k.startswith(("test", "pseudo/", "pseudo_gold", "dev_ece")) for k in gold_only)


def test_final_metrics_carry_the_test_f1_of_the_dev_selected_round():
    best = RoundRecord(round=1, dev_f1=0.7, extra={"test": TEST})
    assert final_metrics(best) == {"best_round": 1.0, "best_dev_f1": 0.7, "best_test_f1": 0.5}
    assert final_metrics(RoundRecord(round=0, dev_f1=0.3)) == {"best_round": 0.0, "best_dev_f1": 0.3}


def test_metric_key_replaces_what_mlflow_refuses():
    assert metric_key("dev", "疾病和诊断", "f1") == "dev/疾病和诊断/f1"
    assert metric_key("dev", "a(b)*", "f1") == "dev/a_b__/f1"


def test_split_sentences_and_stage_metrics_read_the_stage_reports():
    report = {"splits": {"train": {"sentences": 5}, "dev": {"sentences": 2}, "odd": "x"}}
    assert split_sentences(report) == {"train": 5, "dev": 2}
    stages = {"times": {"prepare": 1.5}, "prepare": report, "pretrain": {"loss": 2.0, "note": "x", "bad": float("nan")}}
    assert stage_metrics(stages) == {"time/prepare_s": 1.5, "data/sentences/train": 5.0, "data/sentences/dev": 2.0,
                                     "pretrain/loss": 2.0}


# ----------------------------------------------------------------------------------------------
# What the plots show
# ----------------------------------------------------------------------------------------------


def _test(f1):
    return {"test": {"micro": {"f1": f1}}}


def test_f1_series_has_dev_and_test_per_round_and_the_dev_selected_round():
    rounds = [RoundRecord(0, 0.5, extra=_test(0.45)), RoundRecord(1, 0.7, extra={}),
              RoundRecord(2, 0.6, extra=_test(0.7))]
    assert f1_series(rounds) == {"round": [0, 1, 2], "dev_f1": [0.5, 0.7, 0.6], "test_f1": [0.45, None, 0.7],
                                 "best_round": 1}


def _gold(per_type):
    return {t: {"precision": p, "recall": 0.5, "f1": 0.5, "tp": tp, "fp": fp, "fn": 1}
            for t, (p, tp, fp) in per_type.items()}


def test_pseudo_series_kept_per_type_and_precision_when_every_round_has_hidden_gold():
    r1 = RoundRecord(1, 0.5, pseudo_entities={"疾病和诊断": 4}, pseudo_prf={"precision": 0.9},
                     extra={"pseudo_gold_per_type": _gold({"疾病和诊断": (1.0, 4, 0), "身体部位": (0.0, 0, 0)})})
    r2 = RoundRecord(2, 0.6, pseudo_entities={"疾病和诊断": 6, "身体部位": 2}, pseudo_prf={"precision": 0.8},
                     extra={"pseudo_gold_per_type": _gold({"疾病和诊断": (0.5, 3, 3), "身体部位": (1.0, 2, 0)})})
    series = pseudo_series([RoundRecord(0, 0.4), r1, r2])
    assert series == {"round": [1, 2], "kept": {"疾病和诊断": [4, 6], "身体部位": [0, 2]},
                      "precision": {"疾病和诊断": [1.0, 0.5], "身体部位": [None, 1.0]},  # none kept: no precision
                      "micro_precision": [0.9, 0.8]}
    no_gold = pseudo_series([RoundRecord(0, 0.4), RoundRecord(1, 0.5, pseudo_entities={"a": 3})])
    assert no_gold == {"round": [1], "kept": {"a": [3]}}  # kept counts always, precision only with gold
    assert pseudo_series([RoundRecord(0, 0.4)]) is None


class _Pred:
    def __init__(self, entities, confidence):
        self.entities, self.confidence = entities, confidence


class _Ent:
    def __init__(self, start, end, type_, confidence):
        self.span, self.confidence = Span(start, end, type_), confidence


# a document of two sentences: "患者头痛。" (offset 0) and "既往高血压。" (offset 5)
GOLD = {"d": [Span(2, 4, "症状和体征"), Span(7, 10, "疾病和诊断")]}
PAIRS = [
    (Sentence("d", 0, 0, "患者头痛。"), _Pred([_Ent(2, 4, "症状和体征", 0.9)], 0.8)),  # right
    (Sentence("d", 1, 5, "既往高血压。"), _Pred([_Ent(2, 5, "疾病和诊断", 0.6), _Ent(0, 2, "身体部位", 0.3)], 0.5)),
]


def test_calibration_items_per_entity_in_entity_and_partial_modes():
    for mode in ("entity", "partial"):
        unit, conf, correct = calibration_items(PAIRS, GOLD, SelectionPolicy(0.5, mode))
        assert unit == "entity" and conf == [0.9, 0.6, 0.3] and correct == [True, True, False]


def test_calibration_items_per_sentence_in_sentence_mode():
    unit, conf, correct = calibration_items(PAIRS, GOLD, SelectionPolicy(0.5, "sentence"))
    # the policy's score: min of the entity and sentence confidences; right only when exactly the gold
    assert unit == "sentence" and conf == [0.8, 0.3] and correct == [True, False]
    crossing = {"d": [Span(3, 7, "疾病和诊断")]}  # a gold span across the boundary: never right
    empty = [(Sentence("d", 0, 0, "患者头痛。"), _Pred([], 0.95))]
    assert calibration_items(empty, crossing, SelectionPolicy(0.5, "sentence"))[2] == [False]
    assert calibration_items(empty, {"d": []}, SelectionPolicy(0.5, "sentence"))[1:] == ([0.95], [True])
    with pytest.raises(ValueError, match="no gold document 'x'"):
        calibration_items([(Sentence("x", 0, 0, "a"), _Pred([], 0.5))], GOLD, SelectionPolicy(0.5))


def test_calibration_is_the_reliability_of_the_items():
    cal = calibration(PAIRS, GOLD, SelectionPolicy(0.5, "entity", "min_marginal"), bins=10)
    assert (cal["unit"], cal["mode"], cal["method"], cal["n"]) == ("entity", "entity", "entity_min_marginal", 3)
    assert cal["ece"] == pytest.approx((0.1 + 0.4 + 0.3) / 3)
    assert calibration([], GOLD, SelectionPolicy(0.5, "entity"))["ece"] is None  # nothing predicted


def test_pseudo_label_metrics_have_one_source_per_type_scores_included():
    m = _pseudo().metrics(None, {"precision": 0.9}, {"疾病和诊断": {"precision": 0.8, "recall": 0.2, "f1": 0.32, "tp": 4}})
    assert m["pseudo/precision"] == 0.9 and m["pseudo_gold/疾病和诊断/precision"] == 0.8
    assert "pseudo_gold/疾病和诊断/tp" not in m
    # a round's metrics are what the result gave, not rebuilt from the record's other fields
    rec = RoundRecord(round=1, dev_f1=0.5, extra={"pseudo_metrics": m, "pseudo_gold_per_type": {"x": {"precision": 1.0}}})
    assert "pseudo_gold/x/precision" not in round_metrics(rec)
    assert round_metrics(rec)["pseudo_gold/疾病和诊断/precision"] == 0.8
