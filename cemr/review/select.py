"""What goes to review: the sentences the model is least sure of, ranked, deduplicated.

Two sources:

- a self-training round (:func:`select_from_round`): the rows of ``<round_dir>/pseudo/all``
  (written by ``cluster.pseudolabel``) whose status is ``below_threshold``. Their uncertainty is
  ``1 - confidence``, the score the round compared with its threshold (the sentence confidence
  in ``sentence`` mode, the best entity otherwise). The shards keep no predictions for those
  rows unless they carry a ``predictions`` column (``PREDICTIONS_COLUMN``); without it the
  model's predictions are made again for the selected sentences only (:func:`attach_predictions`);
- a ``cemr predict`` JSON-lines output (:func:`select_from_predictions`): the records with an
  entity below ``threshold``; uncertainty ``1 - `` its least confident entity.

Ranking: most uncertain first; rows with nothing to score (no entity predicted and no sentence
confidence) last; ties by id. Deduplication: texts equal after
:func:`cemr.corpus.dedup.normalize` (NFKC, case and whitespace folded) are one task, the most
uncertain occurrence; the others are counted and named in its provenance (``duplicates``).
Every row read is accounted for in :class:`SelectionReport`.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cemr.corpus.dedup import normalize, text_digest
from cemr.corpus.document import CorpusError, ReadReport, Span
from cemr.selection import BELOW_THRESHOLD

PREDICTIONS_COLUMN = "predictions"  # optional list<struct<start, end, type, confidence>> of every row
MAX_DUPLICATE_IDS = 20  # duplicate ids named in a task's provenance (all are counted)
ROUND_COLUMNS = ("doc_id", "sent_id", "offset", "text", "status", "confidence", "reason", "round", "source")


@dataclass(frozen=True)
class Scored:
    """A predicted entity (offsets of the item's text, end exclusive) and its confidence."""

    span: Span
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.span.to_dict(), "confidence": self.confidence}


@dataclass(frozen=True)
class ReviewItem:
    """One review task: ``text``, the model's ``predictions`` (None: not known yet), its
    ``uncertainty`` (None: nothing to score) and ``provenance`` (where it came from)."""

    id: str
    text: str
    uncertainty: float | None
    predictions: tuple[Scored, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def round(self) -> int | None:
        return self.provenance.get("round")


@dataclass
class SelectionReport:
    """Accounting of a selection: every row read ends in exactly one bucket of ``outcomes``
    (``selected``, ``duplicate``, ``over_limit``, ``not_below_threshold``: its status or
    confidence kept it out). ``statuses`` counts the rows read per status."""

    read: int = 0
    statuses: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    reader: ReadReport | None = None  # a cemr predict output's read accounting

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"read": self.read, "statuses": dict(sorted(self.statuses.items())),
                               "outcomes": dict(sorted(self.outcomes.items()))}
        if self.reader is not None:
            out["reader"] = self.reader.to_dict(max_issues=20)
        return out


def uncertainty(confidence: float | None) -> float | None:
    """``1 - confidence``; None for a missing or non-finite confidence."""
    if confidence is None or not math.isfinite(float(confidence)):
        return None
    return 1.0 - float(confidence)


def rank_key(unc: float | None, item_id: str) -> tuple[int, float, str]:
    """Sort key: most uncertain first, unscored last, ties by id."""
    return (1, 0.0, item_id) if unc is None else (0, -unc, item_id)


@dataclass
class _Group:
    """The best occurrence of one normalised text and how many others there were."""

    key: Any
    unc: float | None
    item_id: str
    duplicates: list[str] = field(default_factory=list)
    count: int = 0


def _group(groups: dict[bytes, _Group], text: str, key: Any, unc: float | None, item_id: str) -> None:
    digest = text_digest(normalize(text))
    g = groups.get(digest)
    if g is None:
        groups[digest] = _Group(key, unc, item_id)
        return
    g.count += 1
    if rank_key(unc, item_id) < rank_key(g.unc, g.item_id):
        loser, g.key, g.unc, g.item_id = g.item_id, key, unc, item_id
    else:
        loser = item_id
    if len(g.duplicates) < MAX_DUPLICATE_IDS:
        g.duplicates.append(loser)


def _choose(groups: dict[bytes, _Group], limit: int | None, report: SelectionReport) -> list[_Group]:
    """The groups in rank order, cut at ``limit``; outcomes counted."""
    ranked = sorted(groups.values(), key=lambda g: rank_key(g.unc, g.item_id))
    chosen = ranked if limit is None else ranked[:limit]
    report.outcomes["duplicate"] += sum(g.count for g in ranked)
    report.outcomes["selected"] += len(chosen)
    report.outcomes["over_limit"] += len(ranked) - len(chosen)
    return chosen


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None), got {limit}")


# ----------------------------------------------------------------------------------------------
# A self-training round
# ----------------------------------------------------------------------------------------------


def round_shards(path: str | Path) -> Path:
    """The ``pseudo/all`` shard directory of a round directory (``path`` may also be the
    ``pseudo`` directory or the shard directory itself); ``CorpusError`` when there is none."""
    p = Path(path)
    for candidate in (p / "pseudo" / "all", p / "all", p):
        if candidate.is_dir() and any(candidate.glob("*.parquet")):
            return candidate
    raise CorpusError(str(p), None, "no pseudo-label shards here: expected <round_dir>/pseudo/all/*.parquet "
                                    "(written by a self-training round of python -m jobs.bootstrap)")


def _item_id(doc_id: str, sent_id: int) -> str:
    return f"{doc_id}#{sent_id}"


def _predictions_cell(cell: Iterable[dict[str, Any]] | None) -> tuple[Scored, ...]:
    return tuple(Scored(Span(int(d["start"]), int(d["end"]), str(d["type"])), float(d["confidence"]))
                 for d in cell or ())


def select_from_round(round_dir: str | Path, limit: int | None = None,
                      report: SelectionReport | None = None) -> list[ReviewItem]:
    """The below-threshold rows of a round, ranked and deduplicated (see the module docstring),
    at most ``limit``. Two passes over the shards: the first keeps a key and score per distinct
    text (never the texts), the second reads the chosen rows whole."""
    import pyarrow.parquet as pq

    _check_limit(limit)
    report = report if report is not None else SelectionReport()
    shard_dir = round_shards(round_dir)
    files = sorted(shard_dir.glob("*.parquet"))
    groups: dict[bytes, _Group] = {}
    has_predictions = True
    for file in files:
        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
        missing = [c for c in ROUND_COLUMNS if c not in names]
        if missing:
            raise CorpusError(str(file), None, f"not a pseudo-label shard: missing column(s) {', '.join(missing)}")
        has_predictions = has_predictions and PREDICTIONS_COLUMN in names
        row = 0
        for batch in pf.iter_batches(columns=["doc_id", "sent_id", "text", "status", "confidence"]):
            cols = batch.to_pydict()
            for doc_id, sent_id, text, status, conf in zip(cols["doc_id"], cols["sent_id"], cols["text"],
                                                            cols["status"], cols["confidence"]):
                report.read += 1
                report.statuses[status] += 1
                if status != BELOW_THRESHOLD:
                    report.outcomes["not_below_threshold"] += 1
                else:
                    _group(groups, text, (file.name, row), uncertainty(conf), _item_id(doc_id, sent_id))
                row += 1
    chosen = _choose(groups, limit, report)
    wanted = {g.key: g for g in chosen}
    found: dict[Any, ReviewItem] = {}
    columns = list(ROUND_COLUMNS) + ([PREDICTIONS_COLUMN] if has_predictions else [])
    for file in files:
        if not any(k[0] == file.name for k in wanted):
            continue
        row = 0
        for batch in pq.ParquetFile(file).iter_batches(columns=columns):
            cols = batch.to_pydict()
            for i in range(batch.num_rows):
                g = wanted.get((file.name, row + i))
                if g is not None:
                    found[g.key] = _round_item(cols, i, g, f"{file}:{row + i}", has_predictions)
            row += batch.num_rows
    return [found[g.key] for g in chosen]


def _round_item(cols: dict[str, list[Any]], i: int, g: _Group, where: str, has_predictions: bool) -> ReviewItem:
    conf = cols["confidence"][i]
    provenance = {
        "doc_id": cols["doc_id"][i], "sent_id": int(cols["sent_id"][i]), "offset": int(cols["offset"][i]),
        "round": int(cols["round"][i]), "confidence": None if conf is None else float(conf),
        "reason": cols["reason"][i], "shard_row": where, "duplicates": g.count,
        "duplicate_ids": list(g.duplicates),
    }
    preds = _predictions_cell(cols[PREDICTIONS_COLUMN][i]) if has_predictions else None
    return ReviewItem(g.item_id, cols["text"][i], g.unc, preds, provenance)


def attach_predictions(items: Sequence[ReviewItem], predictor: Any, batch_size: int = 64) -> list[ReviewItem]:
    """``items`` with ``predictions`` made by ``predictor.predict_sentences`` (a
    ``cemr.predictor.Predictor``); items that have them already are left as they are."""
    todo = [i for i, it in enumerate(items) if it.predictions is None]
    out = list(items)
    if not todo:
        return out
    preds = predictor.predict_sentences([items[i].text for i in todo], batch_size)
    for i, pred in zip(todo, preds):
        entities = getattr(pred, "entities", pred)
        out[i] = replace(items[i], predictions=tuple(Scored(p.span, float(p.confidence)) for p in entities))
    return out


# ----------------------------------------------------------------------------------------------
# A cemr predict output
# ----------------------------------------------------------------------------------------------


def _read_predict_output(path: Path, reader: ReadReport) -> Iterable[tuple[str, str, tuple[Scored, ...], str]]:
    """``(id, text, predictions, file:line)`` of each record of a ``cemr predict`` JSON-lines file,
    validated and counted like every reader's records (``cemr.corpus.validate``; overlapping
    predictions reject the record, a span outside its text is dropped and counted)."""
    from cemr.corpus.formats._common import iter_json_records
    from cemr.corpus.formats.jsonl import parse_entity
    from cemr.corpus.validate import BAD_ENTITY, MISSING_FIELD, RawSpan

    if not path.is_file():
        raise CorpusError(str(path), None, "expected a cemr predict JSON-lines file")
    for number, builder, record in iter_json_records(path, reader, strict=False, overlap_policy="error",
                                                     types=None):
        text, doc_id, entities = record.get("text"), record.get("id"), record.get("entities")
        if not isinstance(text, str) or not isinstance(entities, list) or not isinstance(doc_id, str):
            builder.reject("not a cemr predict record: expected 'id' (string), 'text' (string) and "
                           "'entities' (list)", MISSING_FIELD)
            continue
        confidences: dict[tuple[int, int, str], float] = {}
        bad = False
        for k, entity in enumerate(entities, 1):
            try:
                start, end, type_, mention = parse_entity(entity)
                conf = entity.get("confidence")
                if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
                    raise ValueError(f"confidence must be a number in [0, 1], got {conf!r}")
            except ValueError as exc:
                builder.bad_span(f"entity #{k}: {exc}; span dropped", BAD_ENTITY)
                builder.reject(f"entity #{k} is not a cemr predict entity: a record whose predictions "
                               "cannot all be read is not exported", BAD_ENTITY)
                bad = True
                break
            confidences[(start, end, type_)] = float(conf)
            builder.add_span(RawSpan(start, end, type_, mention, str(path), number, f"entity #{k}"))
        if bad:
            continue
        doc = builder.build(doc_id, text, source=f"{path}:{number}")
        if doc is None:
            continue
        yield doc.id, doc.text, tuple(Scored(s, confidences[(s.start, s.end, s.type)]) for s in doc.spans), \
            f"{path}:{number}"


def select_from_predictions(path: str | Path, threshold: float, limit: int | None = None,
                            report: SelectionReport | None = None) -> list[ReviewItem]:
    """The records of a ``cemr predict`` JSON-lines output with an entity below ``threshold``,
    ranked by ``1 -`` their least confident entity and deduplicated, at most ``limit``."""
    _check_limit(limit)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    report = report if report is not None else SelectionReport()
    report.reader = report.reader or ReadReport()
    groups: dict[bytes, _Group] = {}
    rows: dict[str, tuple[str, tuple[Scored, ...], str]] = {}
    for doc_id, text, preds, where in _read_predict_output(Path(path), report.reader):
        report.read += 1
        least = min((p.confidence for p in preds), default=None)
        if least is None or least >= threshold:
            status = "no_entity" if least is None else "confident"
            report.statuses[status] += 1
            report.outcomes["not_below_threshold"] += 1
            continue
        report.statuses[BELOW_THRESHOLD] += 1
        rows[where] = (doc_id, text, preds)
        _group(groups, text, where, uncertainty(least), doc_id)
    items = []
    for g in _choose(groups, limit, report):
        doc_id, text, preds = rows[g.key]
        provenance = {"doc_id": doc_id, "round": None, "confidence": 1.0 - g.unc, "threshold": threshold,
                      "record": g.key, "duplicates": g.count, "duplicate_ids": list(g.duplicates)}
        items.append(ReviewItem(g.item_id, text, g.unc, preds, provenance))
    return items
