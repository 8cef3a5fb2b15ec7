"""Entity-level evaluation: exact match of (start, end, type) on document offsets.

Gold and predictions are matched document by document (by id). Spans are counted as a multiset:
a span predicted twice where gold has it once is one true positive and one false positive, and a
span listed twice in gold needs two predictions. Nothing is deduplicated silently; readers and
taggers that never produce duplicates are unaffected.

Conventions: P = tp / (tp + fp), 0 when there are no predictions; R = tp / (tp + fn), 0 when
there is no gold; F1 = 2PR / (P + R), 0 when P + R = 0.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from cemr.corpus.document import Document, Span
from cemr.textwidth import LEFT, RIGHT, format_table
from cemr.textwidth import display_width  # noqa: F401 - re-exported (what the tables are padded by)

SpansByDoc = Union[Mapping[str, Iterable[Span]], Iterable[Document]]


class EvalError(ValueError):
    """Gold and predictions do not fit together (unknown document id, not a span, ...)."""


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 with the counts they come from; ``support`` = gold count."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    support: int

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> "PRF":
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f, tp, fp, fn, tp + fn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass
class EvalReport:
    """Result of :func:`evaluate`: micro scores, per-type scores, gold document and entity counts."""

    micro: PRF
    per_type: dict[str, PRF] = field(default_factory=dict)
    documents: int = 0
    entities: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "micro": self.micro.to_dict(),
            "per_type": {t: prf.to_dict() for t, prf in self.per_type.items()},
            "documents": self.documents,
            "entities": self.entities,
        }

    def to_table(self, digits: int = 4) -> str:
        """Aligned text table, one row per type then ``micro``; columns are padded by display
        width (:mod:`cemr.textwidth`), so CJK type names (2 columns a character) stay aligned."""
        header = ["type", "precision", "recall", "f1", "tp", "fp", "fn", "support"]
        rows = [header]
        for name, prf in [*self.per_type.items(), ("micro", self.micro)]:
            rows.append([
                name,
                f"{prf.precision:.{digits}f}",
                f"{prf.recall:.{digits}f}",
                f"{prf.f1:.{digits}f}",
                str(prf.tp),
                str(prf.fp),
                str(prf.fn),
                str(prf.support),
            ])
        lines = format_table(rows, [LEFT] + [RIGHT] * (len(header) - 1), rule_after=(0, len(rows) - 2))
        lines.append(f"documents: {self.documents}  gold entities: {self.entities}")
        return "\n".join(lines)


def spans_by_doc(data: SpansByDoc, role: str) -> dict[str, list[Span]]:
    """Normalise ``{doc_id: spans}`` or an iterable of :class:`Document` to ``{doc_id: [Span]}``.

    ``role`` ("gold" / "pred") names the side in errors. Raises :class:`EvalError` for a
    document id given twice or an element that is not a ``Span`` / ``Document``.
    """
    out: dict[str, list[Span]] = {}
    if isinstance(data, Mapping):
        items = ((str(k), v) for k, v in data.items())
    else:
        items = (_doc_item(d, role) for d in data)
    for doc_id, spans in items:
        if doc_id in out:
            raise EvalError(f"{role}: document id {doc_id!r} given twice")
        spans = list(spans)
        for s in spans:
            if not isinstance(s, Span):
                raise EvalError(f"{role}: document {doc_id!r}: not a Span: {s!r}")
        out[doc_id] = spans
    return out


def _doc_item(doc: Any, role: str) -> tuple[str, list[Span]]:
    if not isinstance(doc, Document):
        raise EvalError(f"{role}: expected a Document or a mapping of id -> spans, got {doc!r:.80}")
    return doc.id, doc.spans


def match_counts(gold: Iterable[Span], pred: Iterable[Span]) -> dict[str, tuple[int, int, int]]:
    """Exact-match counts of one document: ``{type: (tp, fp, fn)}`` for every type seen.

    Spans are compared as a multiset of ``(start, end, type)``.
    """
    g, p = Counter(gold), Counter(pred)
    out: dict[str, list[int]] = {}
    for span in g.keys() | p.keys():
        tp = min(g[span], p[span])
        counts = out.setdefault(span.type, [0, 0, 0])
        counts[0] += tp
        counts[1] += p[span] - tp
        counts[2] += g[span] - tp
    return {t: (c[0], c[1], c[2]) for t, c in out.items()}


def paired_documents(gold: SpansByDoc, pred: SpansByDoc) -> tuple[dict, dict]:
    """``gold`` and ``pred`` as ``{doc_id: spans}``; a ``pred`` document unknown to gold raises
    :class:`EvalError` naming its id (a gold document absent from ``pred`` has no predictions)."""
    gold_map = spans_by_doc(gold, "gold")
    pred_map = spans_by_doc(pred, "pred")
    unknown = [d for d in pred_map if d not in gold_map]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise EvalError(f"pred: document {unknown[0]!r} is not in gold{more}")
    return gold_map, pred_map


def evaluate(gold: SpansByDoc, pred: SpansByDoc) -> EvalReport:
    """Score ``pred`` against ``gold`` (each ``{doc_id: spans}`` or an iterable of Documents).

    A gold document absent from ``pred`` counts as one with no predictions; a ``pred`` document
    unknown to gold raises :class:`EvalError` naming its id. ``per_type`` has every type seen in
    gold or predictions, sorted.
    """
    gold_map, pred_map = paired_documents(gold, pred)
    totals: dict[str, list[int]] = {}
    for doc_id, gold_spans in gold_map.items():
        for typ, (tp, fp, fn) in match_counts(gold_spans, pred_map.get(doc_id, ())).items():
            acc = totals.setdefault(typ, [0, 0, 0])
            acc[0] += tp
            acc[1] += fp
            acc[2] += fn
    per_type = {t: PRF.from_counts(*totals[t]) for t in sorted(totals)}
    micro = PRF.from_counts(*(sum(c[k] for c in totals.values()) for k in range(3)))
    return EvalReport(
        micro=micro,
        per_type=per_type,
        documents=len(gold_map),
        entities=sum(len(s) for s in gold_map.values()),
    )
