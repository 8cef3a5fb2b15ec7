"""cluster.round_metrics: the flat MLflow metrics of the stages, a round and the run's end, and
PseudoLabelResult.metrics, the one source of a round's pseudo/* metrics."""
from __future__ import annotations

from cemr.selftrain import RoundRecord
from cluster.pseudolabel import PseudoLabelResult
from cluster.round_metrics import final_metrics, metric_key, round_metrics, split_sentences, stage_metrics

TEST = {"micro": {"precision": 0.55, "recall": 0.45, "f1": 0.5}, "per_type": {"身体部位": {"f1": 0.25}}}


def _pseudo(**kw) -> PseudoLabelResult:
    fields = dict(round=2, threshold=0.7, mode="sentence", input_rows=10,
                  counts={"kept": 4, "below_threshold": 5, "failed": 1}, entities_kept={"疾病和诊断": 3},
                  kept_after_cap=3, capped=1, rows_per_labeler={"a": 10}, seconds=0.1, sentences_per_s=100.0,
                  all_dir="all", kept_dir="kept", blocks=2, batch_size=4, actors=1, num_cpus_per_actor=1.0,
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
               "pseudo_metrics": _pseudo().metrics({"疾病和诊断": 5}, {"precision": 0.9, "recall": 0.3, "f1": 0.45}),
               "train": {"best_epoch": 2, "epochs_run": 3}},
    )
    m = round_metrics(rec)
    assert m["dev_f1"] == 0.5 and m["threshold"] == 0.7 and m["dev/疾病和诊断/f1"] == 0.667
    assert (m["test_f1"], m["test_precision"], m["test_recall"], m["test/身体部位/f1"]) == (0.5, 0.55, 0.45, 0.25)
    assert m["pseudo/kept"] == 4 and m["pseudo/below_threshold"] == 5 and m["pseudo/failed/ValueError"] == 1
    assert m["pseudo/kept_entities/疾病和诊断"] == 3 and m["pseudo/proposed_entities/疾病和诊断"] == 5
    assert m["pseudo/precision"] == 0.9 and m["pseudo/sentences_per_s"] == 100.0
    assert m["pseudo/kept_chars"] == 40 and m["pseudo/unsure_chars"] == 7
    assert m["time/train_s"] == 3.0 and m["time/round_s"] == 12.0 and m["train/epochs_run"] == 3
    gold_only = round_metrics(RoundRecord(round=0, dev_f1=0.1))
    assert "threshold" not in gold_only and not any(k.startswith(("test", "pseudo/")) for k in gold_only)


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
