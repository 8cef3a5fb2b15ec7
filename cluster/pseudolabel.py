"""Distributed pseudo-labeling of the unlabeled pool on Ray (one self-training round).

Pipeline (streaming end to end, the corpus never gathered on the driver)::

    Parquet footers of unlabeled_dir -> units: row ranges of row groups (cluster.labeler_pool.plan_units)
      -> LabelerPool (cluster.actors actors, actor_num_cpus / actor_num_gpus / actor_memory_mb each,
         started once per job and reused across rounds): each free actor takes the next unit, reads
         its rows (doc_id, sent_id, offset, text), labels them with PseudoLabeler, writes
         out_dir/all/part-<unit>.parquet (every input row, with its status and reason) and returns
         the unit's counts (by status, entity type, actor, error type)
    counts summed on the driver; the rows in out_dir/all counted from the footers
    [cap configured: (key, confidence, types) of kept rows, returned with the counts -> SelectionPolicy.cap]
    each all/ file -> its kept rows (and the cap) -> out_dir/kept/part-<unit>.parquet, by the actors

Input rows are counted from the Parquet footers; the statuses and the rows written must add up to
that count and ``out_dir/kept`` must hold exactly the kept sentences, else :class:`PseudoLabelError`.
Ray Data started a new actor pool for every pass (~13-14 s per round before the first batch) and
cannot keep one between datasets, hence the pool (:mod:`cluster.labeler_pool`); batch prediction
(:mod:`cluster.batch_predict`, one pass per job) stays on Ray Data.

Actors ask for ``cluster.actor_num_gpus`` as configured (:func:`cluster.runtime.actor_resources`
waits ``cluster.gpu_wait_s`` for them, then fails or, with ``cluster.cpu_fallback``, labels on
the CPU and says so in ``PseudoLabelResult.cpu_fallback``); each actor loads its predictor on the
CUDA device Ray assigned it (:func:`cluster.runtime.assigned_device`).

Only the sentence columns are read: hidden gold spans of the low-resource protocol, if the shards
carry them, never reach the actors. A :class:`PseudoLabeler` loads the predictor once (``__init__``)
and labels batches (``__call__``); a pool actor keeps one while the model stays the same. The selection rule is :class:`cemr.selection.SelectionPolicy`, built from
``selftrain`` (:func:`cemr.selection.policy_from_config`) on the driver; the actors apply it
(:func:`label_row`), the driver caps. Every input row comes out exactly once with ``status``:

- ``kept``: passed the threshold (``SelectionPolicy.decide``); ``spans`` = its pseudo-labels;
- ``below_threshold``: predicted but not confident enough (``spans`` empty);
- ``failed``: the predictor raised on it or returned something invalid; ``reason`` says what.

A batch on which the predictor raises is logged once (error type and message, the batch's first
row ``doc_id/sent_id``) and retried row by row, so one bad sentence fails alone. The failed rows
are counted by error type (``PseudoLabelResult.failures``); when more than
``cluster.max_failed_fraction`` of the input failed, :class:`PseudoLabelFailed` (with the counts
and the first errors) stops the round after ``out_dir/all`` is written, instead of a round
trained on what little was labeled.
``kept_after_cap`` (``out_dir/kept``) applies ``selftrain.max_pseudo_per_round`` and
``selftrain.class_balance`` (``SelectionPolicy.cap``); ``out_dir/all`` keeps the
threshold decision of every row. :class:`PseudoLabelResult` checks that the statuses add up to
the input rows.

Output schema (``OUTPUT_SCHEMA``): ``cemr.corpus.shards.SENTENCE_SCHEMA`` (``doc_id, sent_id,
offset, text, spans, source``; ``source = "pseudo:r<round>"``) then ``unsure`` (character ranges
left untagged by a ``partial`` pseudo-label, read into ``Sentence.unsure``), ``confidence`` (the score
compared with the threshold, ``SelectionPolicy.score``: the sentence score in sentence mode, the
best entity otherwise; null when failed or nothing to score; what the cap ranks by), ``status``,
``reason``, ``predicted`` (entities predicted), ``predictions`` (every predicted entity with its
confidence, kept or not: a reviewer's pre-annotations, :mod:`cemr.review`), ``round`` and
``labeler`` (which actor labeled the row). ``cemr.corpus.shards.iter_sentences`` reads it (extra
columns ignored).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from cemr.corpus.shards import (
    CONFIDENCE_FIELD,
    SPANS_TYPE,
    UNSURE_FIELD,
    count_rows,
    ranges_to_struct,
    sentence_schema,
)
from cemr.selection import (
    FAILED,
    KEPT,
    STATUSES,
    Candidate,
    SelectionPolicy,
    policy_from_config,
)
from cemr.selftrain import load_predictor, unpack_prediction
from cluster.round_metrics import PRF_KEYS, metric_key
from cluster.runtime import actor_device, actor_resources, assigned_device

log = logging.getLogger(__name__)

INPUT_COLUMNS = ["doc_id", "sent_id", "offset", "text"]
PREDICTIONS_FIELD = pa.field("predictions", pa.list_(pa.struct([
    pa.field("start", pa.int32()), pa.field("end", pa.int32()), pa.field("type", pa.string()),
    pa.field("confidence", pa.float32())])))
OUTPUT_SCHEMA = sentence_schema([
    UNSURE_FIELD,
    CONFIDENCE_FIELD,
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("predicted", pa.int32()),
    # every predicted entity of the row with its confidence, kept or not: what a reviewer is
    # shown for a below-threshold row (cemr.review.select)
    PREDICTIONS_FIELD,
    pa.field("round", pa.int32()),
    pa.field("labeler", pa.string()),
])
MAX_REASON = 500
FIRST_ERRORS = 5  # failed rows quoted by PseudoLabelFailed
MAX_BLOCKS = 2000
DEFAULT_PREDICTOR = "cemr.predictor:Predictor"


class PseudoLabelError(RuntimeError):
    """The pipeline could not account for its input (or could not start)."""


class PseudoLabelFailed(PseudoLabelError):
    """More than ``cluster.max_failed_fraction`` of a round's rows failed. ``failed`` of
    ``total`` rows; ``failures``: failed rows per error type; ``first_errors``: up to
    ``FIRST_ERRORS`` failed rows as ``{"doc_id", "sent_id", "reason"}``; ``all_dir``: every row
    with its status and reason."""

    def __init__(self, message: str, *, failed: int, total: int, max_fraction: float, failures: dict[str, int],
                 first_errors: list[dict[str, Any]], all_dir: str):
        super().__init__(message)
        self.failed, self.total, self.max_fraction = int(failed), int(total), float(max_fraction)
        self.failures, self.first_errors, self.all_dir = dict(failures), list(first_errors), str(all_dir)


# ----------------------------------------------------------------------------------------------
# The actor
# ----------------------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def failure_kind(reason: str | None) -> str:
    """The error type a ``failed`` row's reason starts with (``"ValueError: ..."`` ->
    ``ValueError``), ``other`` when it names none."""
    head = (reason or "").split(": ", 1)[0]
    return head if ": " in (reason or "") and head.replace(".", "_").isidentifier() else "other"


def _row_id(batch: pa.Table) -> str:
    """``doc_id/sent_id`` of a batch's first row (for messages; never its text)."""
    if batch.num_rows == 0:
        return "(empty batch)"
    return f"{batch.column('doc_id')[0].as_py()}/{batch.column('sent_id')[0].as_py()}"


def _actor_device(requested: str) -> str:
    """``requested`` (``cpu`` / ``cuda``, from the driver) as the device Ray gave this actor."""
    if requested == "cpu":
        return "cpu"
    return assigned_device(requested, ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def check_prediction_spans(text: str, preds: list[Any]) -> None:
    """Raise ``ValueError`` when a predicted span does not fit ``text`` or overlaps another."""
    spans = sorted(p.span for p in preds)
    for s in spans:
        if not (0 <= s.start < s.end <= len(text)) or not isinstance(s.type, str) or not s.type:
            raise ValueError(f"predicted span {s} does not fit a sentence of {len(text)} chars")
    for a, b in zip(spans, spans[1:]):
        if a.overlaps(b):
            raise ValueError(f"predicted spans {a} and {b} overlap")


def label_row(text: Any, item: Any, threshold: float, mode: str, type_thresholds: Any = ()) -> dict[str, Any]:
    """Status of one sentence given the predictor's output ``item`` for it (pure, no Ray): the
    decision of ``SelectionPolicy(threshold, mode, type_thresholds=...)``
    (:meth:`cemr.selection.SelectionPolicy.decide`).

    Returns ``{"spans": [dict], "unsure": [dict], "status", "reason", "confidence",
    "predicted", "predictions": [dict with confidence]}``; anything invalid becomes ``failed``
    with the reason. ``unsure`` (character ranges left untagged) is filled for kept rows in
    ``partial`` mode only, from the dropped mentions and the predictor's ``token_confidence``
    when it gives one.
    """
    try:
        if not isinstance(text, str):
            raise ValueError(f"text is {type(text).__name__}, expected str")
        preds, sent_conf = unpack_prediction(item)
        check_prediction_spans(text, preds)
        token_conf = getattr(item, "token_confidence", None)
        if token_conf is not None and not len(token_conf):
            token_conf = None  # an empty one: not given
        decision = SelectionPolicy(threshold, mode, type_thresholds=type_thresholds).decide(
            len(text), preds, sent_conf, token_conf)
        return {
            "spans": [s.to_dict() for s in decision.spans],
            "unsure": ranges_to_struct(decision.unsure),
            "status": decision.status,
            "reason": decision.reason,
            "confidence": decision.score,
            "predicted": len(preds),
            "predictions": [{**p.span.to_dict(), "confidence": float(p.confidence)} for p in preds],
        }
    except Exception as exc:  # noqa: BLE001 - recorded per row, never lost
        return {"spans": [], "unsure": [], "status": FAILED, "reason": _error_text(exc), "confidence": None,
                "predicted": 0, "predictions": []}


class PseudoLabeler:
    """Ray Data callable class: loads the predictor once per actor, labels pyarrow batches.

    ``factory``: ``"module:Name"`` or an object whose ``load(model_dir, device)`` (or call) gives a
    predictor with ``predict_sentences(texts, batch_size)``.
    """

    def __init__(
        self,
        factory: Any,
        model_dir: str,
        device: str,
        threshold: float,
        mode: str,
        round: int,
        predict_batch_size: int = 64,
        predictor_kwargs: dict[str, Any] | None = None,
        type_thresholds: Any = (),
    ):
        self.device = _actor_device(device)
        self.predictor = load_predictor(factory, model_dir, self.device, **(predictor_kwargs or {}))
        self.threshold = float(threshold)
        self.mode = mode
        self.type_thresholds = tuple(type_thresholds.items() if isinstance(type_thresholds, Mapping)
                                     else type_thresholds)
        self.round = int(round)
        self.predict_batch_size = int(predict_batch_size)
        self.labeler = f"{socket.gethostname()}:{os.getpid()}"

    def _predict(self, texts: list[Any], first_row: str = "?") -> list[Any]:
        """Predictor output per text; a raising batch is logged once (with ``first_row``, the
        batch's first ``doc_id/sent_id``) and redone row by row (exceptions kept per row)."""
        try:
            if any(not isinstance(t, str) for t in texts):
                raise ValueError("batch has non-string texts")
            out = list(self.predictor.predict_sentences(texts, self.predict_batch_size))
            if len(out) != len(texts):
                raise ValueError(f"predictor returned {len(out)} results for {len(texts)} texts")
            return out
        except Exception as exc:  # noqa: BLE001 - logged, then the failing rows are isolated below
            log.warning("pseudo-labeling round %d, %s: a batch of %d sentences starting at %s failed with %s; "
                        "labeling its rows one by one", self.round, self.labeler, len(texts), first_row,
                        _error_text(exc))
        results: list[Any] = []
        for text in texts:
            try:
                if not isinstance(text, str):
                    raise ValueError(f"text is {type(text).__name__}, expected str")
                (one,) = self.predictor.predict_sentences([text], 1)
                results.append(one)
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        rows = []
        for text, item in zip(texts, self._predict(texts, _row_id(batch))):
            if isinstance(item, BaseException):
                rows.append({"spans": [], "unsure": [], "status": FAILED, "reason": _error_text(item),
                             "confidence": None, "predicted": 0, "predictions": []})
            else:
                rows.append(label_row(text, item, self.threshold, self.mode, self.type_thresholds))
        n = len(texts)
        return pa.Table.from_pydict(
            {
                "doc_id": batch.column("doc_id").cast(pa.string()),
                "sent_id": batch.column("sent_id").cast(pa.int32()),
                "offset": batch.column("offset").cast(pa.int32()),
                "text": batch.column("text").cast(pa.string()),
                "spans": pa.array([r["spans"] for r in rows], type=SPANS_TYPE),
                "source": pa.array([f"pseudo:r{self.round}"] * n, type=pa.string()),
                "unsure": pa.array([r["unsure"] for r in rows], type=UNSURE_FIELD.type),
                "status": pa.array([r["status"] for r in rows], type=pa.string()),
                "reason": pa.array([r["reason"] for r in rows], type=pa.string()),
                "confidence": pa.array([r["confidence"] for r in rows], type=CONFIDENCE_FIELD.type),
                "predicted": pa.array([r["predicted"] for r in rows], type=pa.int32()),
                "predictions": pa.array([r["predictions"] for r in rows], type=PREDICTIONS_FIELD.type),
                "round": pa.array([self.round] * n, type=pa.int32()),
                "labeler": pa.array([self.labeler] * n, type=pa.string()),
            },
            schema=OUTPUT_SCHEMA,
        )


# ----------------------------------------------------------------------------------------------
# Batch functions of the aggregation passes (stateless tasks)
# ----------------------------------------------------------------------------------------------


def summarize_batch(batch: pa.Table) -> pa.Table:
    """Counts of one output batch as ``(key, n)`` rows: ``status=<s>``, ``entities=<type>``,
    ``labeler=<actor>``, ``failed=<error type>`` (:func:`failure_kind` of the failed rows' reasons,
    when the batch has ``reason``), and over the kept rows ``chars=kept`` / ``chars=unsure``
    (characters, and those a partial label leaves unknown; when the batch has ``text`` /
    ``unsure``). Each actor counts the units it writes; the driver sums them."""
    counts: Counter = Counter()
    statuses = batch.column("status").to_pylist()
    for status in statuses:
        counts[f"status={status}"] += 1
    if "reason" in batch.column_names:
        for status, reason in zip(statuses, batch.column("reason").to_pylist()):
            if status == FAILED:
                counts[f"failed={failure_kind(reason)}"] += 1
    if "text" in batch.column_names:
        unsure = batch.column("unsure").to_pylist() if "unsure" in batch.column_names else [None] * len(statuses)
        for status, text, ranges in zip(statuses, batch.column("text").to_pylist(), unsure):
            if status == KEPT:
                counts["chars=kept"] += len(text or "")
                counts["chars=unsure"] += sum(r["end"] - r["start"] for r in ranges or ())
    for labeler in batch.column("labeler").to_pylist():
        counts[f"labeler={labeler}"] += 1
    for spans in batch.column("spans").to_pylist():
        for span in spans or ():
            counts[f"entities={span['type']}"] += 1
    keys = sorted(counts)
    return pa.table({"key": pa.array(keys, pa.string()), "n": pa.array([counts[k] for k in keys], pa.int64())})


def candidates_batch(batch: pa.Table) -> pa.Table:
    """Kept rows of a batch as cap candidates: key, confidence (null: nothing scored) and entity
    types joined by ``;`` (no text); made :class:`cemr.selection.Candidate` by
    ``SelectionPolicy.candidate``."""
    kept = batch.filter(pc.equal(batch.column("status"), KEPT))
    types = [";".join(sorted(s["type"] for s in spans or ())) for spans in kept.column("spans").to_pylist()]
    return pa.table({
        "doc_id": kept.column("doc_id"),
        "sent_id": kept.column("sent_id"),
        "confidence": kept.column("confidence"),
        "types": pa.array(types, pa.string()),
    })


class KeepRows:
    """Filter of the kept pass: ``status == kept`` and, when a cap applies, key in ``selected``."""

    def __init__(self, selected: set[tuple[str, int]] | None):
        self.selected = selected

    def __call__(self, batch: pa.Table) -> pa.Table:
        kept = batch.filter(pc.equal(batch.column("status"), KEPT))
        if self.selected is None:
            return kept
        mask = [(d, s) in self.selected for d, s in zip(kept.column("doc_id").to_pylist(),
                                                          kept.column("sent_id").to_pylist())]
        return kept.filter(pa.array(mask, pa.bool_()))


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


@dataclass
class PseudoLabelResult:
    """Outcome of one pseudo-labeling pass; ``counts`` (by status) sums to ``input_rows``."""

    round: int
    threshold: float
    mode: str
    input_rows: int
    counts: dict[str, int]
    entities_kept: dict[str, int]
    kept_after_cap: int
    capped: int
    rows_per_labeler: dict[str, int]
    seconds: float
    sentences_per_s: float
    all_dir: str
    kept_dir: str
    units: int  # row ranges the pass was cut into (cluster.labeler_pool.plan_units)
    batch_size: int
    actors: int
    num_cpus_per_actor: float
    num_gpus_per_actor: float
    cap_reasons: dict[str, int] = field(default_factory=dict)
    kept_chars: int = 0  # characters of the kept sentences (before the cap)
    unsure_chars: int = 0  # of which a partial label leaves unknown (selection=partial)
    cpu_fallback: bool = False  # GPUs were asked for but did not come: labeled on the CPU
    failures: dict[str, int] = field(default_factory=dict)  # failed rows per error type
    first_errors: list[dict[str, Any]] = field(default_factory=list)  # a few failed rows: doc_id, sent_id, reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, proposed_entities: Mapping[str, int] | None = None,
                heldout: Mapping[str, float] | None = None,
                heldout_per_type: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, float]:
        """Every number of this pass as flat tracking metrics, the one source of the ``pseudo/*``
        metrics of a round (:func:`cluster.round_metrics.round_metrics`).

        ``pseudo/<status>`` (sentences per status), ``pseudo/input_rows``, ``pseudo/kept_after_cap``,
        ``pseudo/capped``, ``pseudo/sentences_per_s``, ``pseudo/kept_chars``, ``pseudo/unsure_chars``,
        ``pseudo/cpu_fallback``, ``pseudo/kept_entities/<type>`` (the kept set, after the caps) and
        ``pseudo/failed/<error type>``; with ``proposed_entities`` (entities of the rows that passed
        the threshold, before the caps: :func:`cluster.pseudosets.entity_counts`)
        ``pseudo/proposed_entities/<type>``; with ``heldout`` (the kept set scored against hidden gold:
        :func:`cluster.pseudosets.score_against_heldout`) ``pseudo/precision``, ``pseudo/recall``
        and ``pseudo/f1``, and with ``heldout_per_type`` (its ``per_type``)
        ``pseudo_gold/<type>/{precision,recall,f1}``.
        """
        out: dict[str, float] = {f"pseudo/{s}": float(self.counts.get(s, 0)) for s in STATUSES}
        for name in ("input_rows", "kept_after_cap", "capped", "sentences_per_s", "kept_chars", "unsure_chars",
                     "cpu_fallback"):
            out[f"pseudo/{name}"] = float(getattr(self, name))
        out.update({metric_key("pseudo", "kept_entities", t): float(n) for t, n in self.entities_kept.items()})
        out.update({metric_key("pseudo", "failed", kind): float(n) for kind, n in self.failures.items()})
        out.update({metric_key("pseudo", "proposed_entities", t): float(n)
                    for t, n in (proposed_entities or {}).items()})
        out.update({f"pseudo/{k}": float(heldout[k]) for k in PRF_KEYS if k in (heldout or {})})
        for t, prf in (heldout_per_type or {}).items():
            out.update({metric_key("pseudo_gold", t, k): float(prf[k]) for k in PRF_KEYS if k in prf})
        return out


def check_failed_fraction(round: int, failed: int, total: int, max_fraction: float, failures: dict[str, int],
                          first_errors: list[dict[str, Any]], all_dir: str) -> None:
    """Raise :class:`PseudoLabelFailed` when ``failed / total`` exceeds ``max_fraction``
    (``cluster.max_failed_fraction``); the message gives the counts per error type and the
    first failed rows."""
    if total <= 0 or failed / total <= max_fraction:
        return
    quoted = "; ".join(f"{e['doc_id']}/{e['sent_id']}: {e['reason']}" for e in first_errors) or "none read"
    raise PseudoLabelFailed(
        f"round {round}: {failed} of {total} sentences ({failed / total:.1%}) failed pseudo-labeling, more than "
        f"cluster.max_failed_fraction={max_fraction:g}. Failed rows by error: {failures}. First errors: {quoted}. "
        f"Every row with its status and reason is in {all_dir} (status == 'failed'). Fix the model or predictor "
        f"behind these errors, or raise cluster.max_failed_fraction to train on the rows that did label.",
        failed=failed, total=total, max_fraction=max_fraction, failures=failures, first_errors=first_errors,
        all_dir=all_dir)


def read_first_errors(all_dir: str | os.PathLike, n: int = FIRST_ERRORS) -> list[dict[str, Any]]:
    """Up to ``n`` failed rows of ``all_dir`` as ``{"doc_id", "sent_id", "reason"}`` (in file order;
    only those columns of failed rows are read, never the text)."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(all_dir), format="parquet")
    table = dataset.head(n, columns=["doc_id", "sent_id", "reason"], filter=pc.field("status") == FAILED)
    return table.to_pylist()


def plan_blocks(rows: int, actors: int, batch_size: int) -> tuple[int, int]:
    """``(num_blocks, batch_size)`` so every actor gets work: at least two batches per actor.

    Small inputs get smaller batches (``ceil(rows / (2 * actors))``), large ones one block per
    batch, capped at ``MAX_BLOCKS``.
    """
    if rows <= 0:
        return 1, max(1, batch_size)
    batch = max(1, min(batch_size, math.ceil(rows / (2 * actors))))
    blocks = max(2 * actors, min(MAX_BLOCKS, math.ceil(rows / batch)))
    return blocks, batch


def _reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _ensure_parquet(path: Path) -> None:
    """An empty result still gets one (empty) Parquet file with the schema, so readers work."""
    if not any(path.glob("*.parquet")):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(OUTPUT_SCHEMA.empty_table(), path / "empty.parquet")


def _cap_selection(results: list[dict[str, Any]], policy: SelectionPolicy, type_share: dict[str, float] | None):
    """The cap (``max_pseudo_per_round`` / class balance) over the kept rows' candidates the actors
    returned (key, confidence, types: never text): the keys kept, the drop reasons, the kept
    entities per type and, per ``all/`` file, the keys it keeps."""
    cands: dict[tuple[str, int], Candidate] = {}
    file_of: dict[tuple[str, int], str] = {}
    for r in results:
        for d, s, c, t in r.get("candidates") or ():
            cands[(d, s)] = policy.candidate((d, s), c, t.split(";") if t else ())
            file_of[(d, s)] = r["file"]
    res = policy.cap(cands.values(), type_share)
    entities: Counter = Counter()
    per_file: dict[str, list[tuple[str, int]]] = {}
    for key in res.selected:
        entities.update(cands[key].type_counts)
        per_file.setdefault(file_of[key], []).append(key)
    return set(res.selected), dict(Counter(res.dropped.values())), dict(sorted(entities.items())), per_file


def pseudo_label(
    unlabeled_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    threshold: float,
    cluster_cfg: Any,
    selftrain_cfg: Any,
    round: int,
    *,
    predictor: Any = DEFAULT_PREDICTOR,
    predictor_kwargs: dict[str, Any] | None = None,
    type_share: dict[str, float] | None = None,
    pool: Any = None,
    log_line: Any = None,
    type_thresholds: Mapping[str, float] | None = None,
) -> PseudoLabelResult:
    """Label every sentence of ``unlabeled_dir`` (Parquet shards) with the model of ``model_dir``.

    Writes ``out_dir/all`` (every row with its status) and ``out_dir/kept`` (the pseudo-labeled
    set after the cap); both are replaced if present. ``cluster_cfg``: ``actors``,
    ``actor_num_cpus``, ``actor_num_gpus`` (asked for as configured: waited for ``gpu_wait_s``, then
    :class:`cluster.runtime.GPUUnavailable` unless ``cpu_fallback``), ``batch_size``,
    ``rows_per_shard`` (the most rows per output file), ``actor_threads`` (when set, passed to the
    predictor's ``load`` as ``num_threads=``), ``actor_precision`` (its ``precision=``) and ``max_failed_fraction`` (more failed rows:
    :class:`PseudoLabelFailed`). ``selftrain_cfg``: ``selection``
    (sentence | entity | partial), ``max_pseudo_per_round``, ``class_balance`` (needs ``type_share``: gold
    share per type), ``confidence`` (passed to the predictor's ``load`` as ``confidence=``, with
    ``predictor_kwargs``): the :class:`cemr.selection.SelectionPolicy` of ``threshold`` and these
    (:func:`cemr.selection.policy_from_config`; a bad value: :class:`PseudoLabelError` before
    anything runs).

    ``type_thresholds``: ``{type: threshold}`` fitted on dev (``selftrain.target_precision``), the
    policy's ``type_thresholds``.
    ``pool``: a :class:`cluster.labeler_pool.LabelerPool` kept across rounds (started for the same
    ``cluster_cfg`` and ``predictor``, else :class:`PseudoLabelError`); None: one is started for this
    call and shut down after it. ``log_line``: where the pass says how it was cut (default: logging).
    Ray must be initialised (:func:`cluster.runtime.init_ray`).
    """
    from cluster.labeler_pool import LabelerPool, LabelerPoolError, LabelSpec, model_stamp, plan_units, row_groups

    if not ray.is_initialized():
        raise PseudoLabelError("Ray is not initialised: call cluster.runtime.init_ray first")
    unlabeled_dir, out_dir = Path(unlabeled_dir), Path(out_dir)
    if not unlabeled_dir.exists():
        raise PseudoLabelError(f"{unlabeled_dir}: unlabeled shards not found")
    try:
        policy = policy_from_config(selftrain_cfg, threshold, type_thresholds)
    except ValueError as exc:
        raise PseudoLabelError(f"bad selection policy: {exc}") from exc
    if policy.class_balance and not type_share:
        raise PseudoLabelError("selftrain.class_balance needs the gold type distribution (type_share)")
    all_dir, kept_dir = out_dir / "all", out_dir / "kept"
    max_failed = float(getattr(cluster_cfg, "max_failed_fraction", 0.01))
    if not 0.0 <= max_failed <= 1.0:
        raise PseudoLabelError(f"cluster.max_failed_fraction must be between 0 and 1, got {max_failed}")
    threads: dict[str, int] = {}
    if getattr(cluster_cfg, "actor_threads", None) is not None:
        if int(cluster_cfg.actor_threads) < 1:
            raise PseudoLabelError(f"cluster.actor_threads must be >= 1 (or null), got {cluster_cfg.actor_threads}")
        threads["num_threads"] = int(cluster_cfg.actor_threads)
    if pool is not None and pool.key != LabelerPool.config_key(cluster_cfg, predictor):
        raise PseudoLabelError("the pseudo-labeling actors were started for other cluster settings or another "
                               "predictor: start a LabelerPool for these")
    actors = int(cluster_cfg.actors)
    mode = policy.mode
    rows_per_file = max(1, int(getattr(cluster_cfg, "rows_per_shard", 2000)))
    wanted = str(getattr(cluster_cfg, "actor_precision", "fp32"))
    precision = {"precision": wanted} if wanted != "fp32" else {}  # fp32: the predictor's default
    say = log_line or log.info

    started = time.perf_counter()
    input_rows = count_rows(unlabeled_dir)
    units = plan_units(row_groups(unlabeled_dir), actors, rows_per_file)
    _, batch_size = plan_blocks(input_rows, actors, int(cluster_cfg.batch_size))
    _reset_dir(all_dir)
    _reset_dir(kept_dir)
    all_dir.mkdir(parents=True)
    own = pool is None and input_rows > 0
    if own:
        pool = LabelerPool(cluster_cfg, predictor)
    res = pool.resources if pool is not None else actor_resources(cluster_cfg)
    say(f"pseudo-labeling round {round}: {input_rows} sentences in {len(units)} units, {actors} actor(s) "
        f"({'started for this pass' if own else 'kept from earlier passes' if pool and pool.passes else 'new'}), "
        f"batches of {batch_size}, {res}")
    spec = LabelSpec(model_dir=str(model_dir), threshold=policy.threshold, mode=policy.mode, round=int(round),
                     batch_size=batch_size, predict_batch_size=min(batch_size, 64),
                     predictor_kwargs={**policy.predictor_kwargs(), **threads, **precision, **(predictor_kwargs or {})},
                     candidates=policy.capped, model_stamp=model_stamp(model_dir),
                     type_thresholds=policy.type_thresholds)
    results: list[dict[str, Any]] = []
    try:
        if units:
            from cemr.progress import progress

            with progress(total=input_rows, desc=f"pseudo-label round {round}", unit="sent") as bar:
                results = pool.label(spec, units, all_dir, on_done=lambda r: bar.update(r["rows"]))
        label_seconds = time.perf_counter() - started
        _ensure_parquet(all_dir)

        sums: Counter = Counter()
        for r in results:
            sums.update(r["counts"])
        counts = {s: sums.get(f"status={s}", 0) for s in STATUSES}
        unknown = {k: v for k, v in sums.items() if k.startswith("status=") and k[7:] not in STATUSES}
        written_all = count_rows(all_dir)
        if unknown or sum(counts.values()) != input_rows or written_all != input_rows:
            raise PseudoLabelError(
                f"{unlabeled_dir}: {input_rows} input rows but statuses {counts} {unknown or ''} and {written_all} "
                f"rows in {all_dir}: rows were lost or duplicated"
            )
        failures = {k[7:]: v for k, v in sorted(sums.items()) if k.startswith("failed=")}
        first_errors = read_first_errors(all_dir) if counts[FAILED] else []
        if counts[FAILED]:
            log.warning("pseudo-labeling round %d: %d of %d sentences failed %s; first: %s", round, counts[FAILED],
                        input_rows, failures, first_errors[:1])
        check_failed_fraction(int(round), counts[FAILED], input_rows, max_failed, failures, first_errors,
                              str(all_dir))
        selected, cap_reasons, entities = None, {}, None
        if counts[KEPT]:
            per_file = None
            if policy.capped:
                selected, cap_reasons, entities, per_file = _cap_selection(results, policy, type_share)
            pool.keep([r["file"] for r in results], kept_dir, per_file)
    except LabelerPoolError as exc:
        raise PseudoLabelError(str(exc)) from exc
    finally:
        if own:
            pool.shutdown()
    _ensure_parquet(kept_dir)
    kept_after_cap = counts[KEPT] if selected is None else len(selected)
    if entities is None:
        entities = {k[9:]: v for k, v in sorted(sums.items()) if k.startswith("entities=")}
    written = count_rows(kept_dir)
    if written != kept_after_cap:
        raise PseudoLabelError(f"{kept_dir}: {written} rows written but {kept_after_cap} sentences kept")

    return PseudoLabelResult(
        round=int(round),
        threshold=float(threshold),
        mode=mode,
        input_rows=input_rows,
        counts=counts,
        entities_kept=entities,
        kept_after_cap=kept_after_cap,
        capped=counts[KEPT] - kept_after_cap,
        rows_per_labeler={k[8:]: v for k, v in sorted(sums.items()) if k.startswith("labeler=")},
        seconds=label_seconds,
        sentences_per_s=input_rows / label_seconds if label_seconds > 0 else 0.0,
        all_dir=str(all_dir),
        kept_dir=str(kept_dir),
        units=len(units),
        batch_size=batch_size,
        actors=actors,
        num_cpus_per_actor=res["num_cpus"],
        num_gpus_per_actor=res["num_gpus"],
        cap_reasons=cap_reasons,
        kept_chars=int(sums.get("chars=kept", 0)),
        unsure_chars=int(sums.get("chars=unsure", 0)),
        cpu_fallback=bool(res["cpu_fallback"]),
        failures=failures,
        first_errors=first_errors,
    )
