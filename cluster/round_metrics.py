"""The MLflow metrics of a bootstrap run as flat ``{name: float}`` dicts: the stages (step 0),
each round (step = round) and the run's end (step = the best round).

Pseudo-label metrics (``pseudo/*``) have one source, :meth:`cluster.pseudolabel.PseudoLabelResult.
metrics`: a round stores what it returned (``RoundRecord.extra["pseudo_metrics"]``) and
:func:`round_metrics` passes it on as it is. Names are made MLflow-safe by :func:`metric_key`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from cemr.selftrain import RoundRecord

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
    training set, the pseudo-labels (as stored from ``PseudoLabelResult.metrics``), times and
    training facts. Non-finite values are left out."""
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
