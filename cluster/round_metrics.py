"""The MLflow metrics of a bootstrap run as flat ``{name: float}`` dicts: the stages (step 0),
each round (step = round) and the run's end (step = the best round); and the numbers its plots
show (:func:`f1_series`, :func:`pseudo_series`, :func:`calibration`).

Pseudo-label metrics (``pseudo/*``, and ``pseudo_gold/<type>/{precision,recall,f1}``: the kept set
scored per type against the pool's hidden gold) have one source, :meth:`cluster.pseudolabel.
PseudoLabelResult.metrics`: a round stores what it returned (``RoundRecord.extra["pseudo_metrics"]``)
and :func:`round_metrics` passes it on as it is (``RoundRecord.extra["pseudo_gold_per_type"]`` keeps
the per-type counts for the plot). The round's calibration on dev (``RoundRecord.extra["calibration"]``,
:func:`calibration`) becomes ``dev_ece``.
Names are made MLflow-safe by :func:`metric_key`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cemr.corpus.document import Span
from cemr.plots import reliability_bins
from cemr.selection import SelectionPolicy
from cemr.selftrain import RoundRecord, best_round, unpack_prediction

PRF_KEYS = ("precision", "recall", "f1")


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts joined by ``/`` (characters MLflow refuses become ``_``)."""
    return "/".join(re.sub(r"[^\w.\- :]", "_", str(p)) for p in parts)


def prf_metrics(prefix: str, report: Mapping[str, Any] | None) -> dict[str, float]:
    """``<prefix>_f1`` etc. (micro) and ``<prefix>/<type>/f1`` etc. from an EvalReport dict; empty
    when there is no report."""
    if not report:
        return {}
    out: dict[str, float] = {}
    micro = report.get("micro", {})
    for k in PRF_KEYS:
        if k in micro:
            out[f"{prefix}_{k}"] = float(micro[k])
    for t, prf in report.get("per_type", {}).items():
        for k in PRF_KEYS:
            if k in prf:
                out[metric_key(prefix, t, k)] = float(prf[k])
    return out


def round_test_f1(record: RoundRecord) -> float | None:
    """The micro test F1 of a round; None when the round has no test evaluation."""
    f1 = ((record.extra.get("test") or {}).get("micro") or {}).get("f1")
    return None if f1 is None else float(f1)


def round_metrics(record: RoundRecord) -> dict[str, float]:
    """Every number of a completed round, as flat MLflow metrics (logged at step = round): dev and,
    when the round has a test evaluation, test precision / recall / F1 (micro and per type), the
    training set, the pseudo-labels (as stored from ``PseudoLabelResult.metrics``; per type against
    hidden gold), the dev ECE, times and training facts. Non-finite values are left out."""
    ex = record.extra or {}
    out: dict[str, float] = {
        "dev_f1": record.dev_f1,
        "dev_precision": record.dev_precision,
        "dev_recall": record.dev_recall,
        "train_sentences": float(record.train_sentences),
        "pseudo_sentences": float(record.pseudo_sentences),
        "time/round_s": float(record.seconds),
    }
    if record.threshold is not None:
        out["threshold"] = float(record.threshold)
    out.update(prf_metrics("dev", ex.get("dev")))
    out.update(prf_metrics("test", ex.get("test")))
    out.update({str(k): float(v) for k, v in (ex.get("pseudo_metrics") or {}).items()})
    if (ex.get("calibration") or {}).get("ece") is not None:
        out["dev_ece"] = float(ex["calibration"]["ece"])
    for k, v in (ex.get("times") or {}).items():
        out[metric_key("time", f"{k}_s")] = float(v)
    train = ex.get("train") or {}
    for k in ("best_epoch", "epochs_run", "train_rows", "resumed_from_epoch"):
        if k in train:
            out[f"train/{k}"] = float(train[k])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def final_metrics(best: RoundRecord) -> dict[str, float]:
    """The run's summary metrics: the dev-selected round, its dev F1 and (when it has a test
    evaluation) its test F1 (``best_test_f1``)."""
    out = {"best_round": float(best.round), "best_dev_f1": float(best.dev_f1)}
    test_f1 = round_test_f1(best)
    if test_f1 is not None:
        out["best_test_f1"] = test_f1
    return out


def split_sentences(prepare_report: Mapping[str, Any]) -> dict[str, int]:
    """Sentences per split from a ``prepare_report.json`` dict."""
    return {split: int(info["sentences"]) for split, info in (prepare_report.get("splits") or {}).items()
            if isinstance(info, Mapping) and isinstance(info.get("sentences"), int)}


def stage_metrics(stages: Mapping[str, Any]) -> dict[str, float]:
    """Stage times, sentences per split and pretraining metrics (step 0)."""
    out = {metric_key("time", f"{k}_s"): float(v) for k, v in stages.get("times", {}).items()}
    for split, n in split_sentences(stages.get("prepare") or {}).items():
        out[metric_key("data", "sentences", split)] = float(n)
    for k, v in (stages.get("pretrain") or {}).items():
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[metric_key("pretrain", k)] = float(v)
    return out


# ----------------------------------------------------------------------------------------------
# What the plots show
# ----------------------------------------------------------------------------------------------


def f1_series(rounds: Sequence[RoundRecord]) -> dict[str, Any]:
    """The F1-per-round plot's numbers: ``round``, ``dev_f1``, ``test_f1`` (None for a round without
    a test evaluation) per round, and ``best_round`` (dev-selected, :attr:`RunState.best` rule)."""
    return {"round": [r.round for r in rounds], "dev_f1": [r.dev_f1 for r in rounds],
            "test_f1": [round_test_f1(r) for r in rounds],
            "best_round": best_round(list(rounds)).round if rounds else None}


def pseudo_series(rounds: Sequence[RoundRecord]) -> dict[str, Any] | None:
    """The pseudo-label plot's numbers over the rounds that pseudo-labeled (round >= 1): ``round``,
    ``kept`` (``{type: entities kept after the caps, per round}``, 0 where a round kept none of a
    type), and, when every one of them was scored against hidden gold, ``precision``
    (``{type: per round}``, None where a round kept none of that type) and ``micro_precision``.
    None when no round pseudo-labeled."""
    pl = [r for r in rounds if r.round >= 1]
    if not pl:
        return None
    types = sorted({t for r in pl for t in r.pseudo_entities}
                   | {t for r in pl for t in (r.extra.get("pseudo_gold_per_type") or {})})
    out: dict[str, Any] = {"round": [r.round for r in pl],
                           "kept": {t: [int(r.pseudo_entities.get(t, 0)) for r in pl] for t in types}}
    if all(r.pseudo_prf and r.extra.get("pseudo_gold_per_type") is not None for r in pl):
        def precision(r: RoundRecord, t: str) -> float | None:
            prf = r.extra["pseudo_gold_per_type"].get(t) or {}
            return float(prf["precision"]) if prf.get("tp", 0) + prf.get("fp", 0) > 0 else None

        out["precision"] = {t: [precision(r, t) for r in pl] for t in types}
        out["micro_precision"] = [float(r.pseudo_prf["precision"]) for r in pl]
    return out


def _sentence_gold(gold: Sequence[Span], offset: int, length: int) -> tuple[set[Span], bool]:
    """The gold spans inside a sentence at ``offset`` of ``length`` characters (sentence offsets),
    and whether a gold span crosses its boundary (the sentence can then never be right)."""
    inside, crossing = set(), False
    end = offset + length
    for sp in gold:
        if sp.start >= offset and sp.end <= end:
            inside.add(sp.shifted(-offset))
        elif sp.start < end and sp.end > offset:
            crossing = True
    return inside, crossing


def calibration_items(pairs: Iterable[tuple[Any, Any]], gold: Mapping[str, Sequence[Span]],
                      policy: SelectionPolicy) -> tuple[str, list[float], list[bool]]:
    """``(unit, confidences, correct)`` of a model's predictions on gold documents, with the
    confidence the selection policy thresholds.

    ``pairs``: ``(sentence, prediction)`` as :meth:`cemr.predictor.Predictor.
    predict_document_sentences` gives them (``sentence.doc_id/offset/text``; the prediction's
    entities in sentence offsets and its sentence confidence); ``gold``: ``{doc_id: spans}`` in
    document offsets. ``sentence`` mode (a sentence is kept whole): one item per sentence with a
    :meth:`SelectionPolicy.score` (min of its entity and sentence confidences), correct when its
    predicted spans are exactly its gold spans. ``entity`` / ``partial`` modes (entities kept one
    by one): one item per predicted entity, correct when its span and type are gold."""
    if policy.mode != "sentence":
        _types, confidences, correct = entity_items(pairs, gold)
        return "entity", confidences, correct
    confidences: list[float] = []
    correct: list[bool] = []
    for preds, sent_conf, inside, crossing in _scored_sentences(pairs, gold):
        score = policy.score(preds, sent_conf)
        if score is None:
            continue  # nothing to score: never kept
        confidences.append(float(score))
        correct.append(not crossing and {p.span for p in preds} == inside and len(preds) == len(inside))
    return "sentence", confidences, correct


def _scored_sentences(pairs: Iterable[tuple[Any, Any]], gold: Mapping[str, Sequence[Span]]):
    """Per ``(sentence, prediction)``: ``(entities, sentence confidence, gold spans inside it in
    sentence offsets, whether a gold span crosses its ends)``."""
    for sent, pred in pairs:
        if sent.doc_id not in gold:
            raise ValueError(f"sentence {sent.doc_id}/{sent.sent_id}: no gold document {sent.doc_id!r}")
        preds, sent_conf = unpack_prediction(pred)
        inside, crossing = _sentence_gold(gold[sent.doc_id], sent.offset, len(sent.text))
        yield preds, sent_conf, inside, crossing


def entity_items(pairs: Iterable[tuple[Any, Any]], gold: Mapping[str, Sequence[Span]]
                 ) -> tuple[list[str], list[float], list[bool]]:
    """``(types, confidences, correct)``: one item per predicted entity of ``pairs`` (as for
    :func:`calibration_items`), correct when its span and type are gold: what
    :func:`cemr.selection.fit_type_thresholds` fits per-type thresholds on."""
    types: list[str] = []
    confidences: list[float] = []
    correct: list[bool] = []
    for preds, _conf, inside, _crossing in _scored_sentences(pairs, gold):
        for p in preds:
            types.append(p.span.type)
            confidences.append(float(p.confidence))
            correct.append(p.span in inside)
    return types, confidences, correct


def calibration(pairs: Iterable[tuple[Any, Any]], gold: Mapping[str, Sequence[Span]], policy: SelectionPolicy,
                bins: int = 10) -> dict[str, Any]:
    """The round's reliability on dev (stored as ``RoundRecord.extra["calibration"]``): ``unit``,
    ``mode``, ``method`` and :func:`cemr.plots.reliability_bins` of :func:`calibration_items`
    (``ece`` NaN stored as None: nothing predicted)."""
    unit, confidences, correct = calibration_items(pairs, gold, policy)
    rel = reliability_bins(confidences, correct, bins).to_dict()
    if math.isnan(rel["ece"]):
        rel["ece"] = None
    return {"unit": unit, "mode": policy.mode, "method": policy.confidence_method, **rel}
