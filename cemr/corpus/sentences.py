"""Sentence splitting with exact offsets, and mapping sentence predictions back to documents.

Records are split into pieces of at most ``max_len`` characters for the tagger:

1. cut after sentence punctuation (``。！？；!?;`` and newlines; a run of it, with any closing
   quotes or brackets that follow, stays with its sentence);
2. strip whitespace at the edges of each piece and drop pieces that are only whitespace (offsets
   stay exact: a piece is a ``(start, end)`` range of the original text);
3. a piece still longer than ``max_len`` is cut after the last comma (``，,、``) that keeps it
   within ``max_len``, else at the last position that keeps it within ``max_len``.

Two ways to split a labeled document (:func:`split_document`):

- ``guided=True`` (training text): no cut falls strictly inside a protected span (a gold mention)
  unless that cannot be avoided (a span longer than ``max_len``, or overlapping spans chained past
  ``max_len``); such spans are dropped from both sides and counted.
- ``guided=False`` (evaluation and pool text): the cuts are the ones unseen text gets
  (:meth:`cemr.predictor.Predictor.split`, the gold spans ignored); gold is mapped onto the
  sentences afterwards, and a gold span a cut falls inside is counted (``spans_dropped``): it is
  a miss when scored on the whole document, never dropped from the score.
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cemr.corpus.document import Document, Span

SENTENCE_END = "。！？；!?;\n"
CLOSERS = "”’」』）)】]》"
COMMAS = "，,、"

_SENTENCE_END_RE = re.compile(
    "[" + re.escape(SENTENCE_END) + "]+[" + re.escape(CLOSERS) + "]*"
)


@dataclass
class Sentence:
    """A piece of one document: ``text == doc.text[offset:offset + len(text)]``.

    ``spans`` are relative to the sentence (``text[s.start:s.end]`` is the mention).
    ``unsure``: ``(start, end)`` character ranges (sentence offsets, end exclusive) whose tags are
    unknown: a partial pseudo-label (``selftrain.selection=partial``) leaves there whatever the
    CRF finds likely instead of training them as ``O``. Empty for gold sentences.
    """

    doc_id: str
    sent_id: int
    offset: int
    text: str
    spans: list[Span] = field(default_factory=list)
    unsure: list[tuple[int, int]] = field(default_factory=list)

    @property
    def end(self) -> int:
        """End offset (exclusive) of the sentence in its document."""
        return self.offset + len(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "sent_id": self.sent_id,
            "offset": self.offset,
            "text": self.text,
            "spans": [s.to_dict() for s in self.spans],
            **({"unsure": [list(r) for r in self.unsure]} if self.unsure else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sentence":
        spans = [Span(int(s["start"]), int(s["end"]), str(s["type"])) for s in d.get("spans", ())]
        unsure = [(int(a), int(b)) for a, b in d.get("unsure", ())]
        return cls(str(d["doc_id"]), int(d["sent_id"]), int(d["offset"]), str(d["text"]), spans, unsure)


@dataclass
class SplitStats:
    """Accounting of :func:`split_document` calls (pass one object to accumulate over a corpus).

    ``spans == spans_kept + spans_dropped``; ``dropped`` lists ``(doc_id, span)`` of the dropped
    spans (document offsets), at most ``max_listed``.
    """

    documents: int = 0
    sentences: int = 0
    spans: int = 0
    spans_kept: int = 0
    spans_dropped: int = 0
    dropped: list[tuple[str, Span]] = field(default_factory=list)
    max_listed: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "sentences": self.sentences,
            "spans": self.spans,
            "spans_kept": self.spans_kept,
            "spans_dropped": self.spans_dropped,
            "dropped": [{"doc_id": d, **s.to_dict()} for d, s in self.dropped],
        }


def _check_spans(text_len: int, spans: Sequence[Span], where: str) -> None:
    for s in spans:
        if s.end > text_len:
            raise ValueError(f"{where}: span {s} ends past the text length {text_len}")


def _blocked_boundaries(n: int, protect: Sequence[Span]) -> list[bool]:
    """``blocked[p]`` (p in 0..n) is True when a cut at p falls strictly inside a protected span."""
    diff = [0] * (n + 2)
    for s in protect:
        if s.end - s.start > 1:
            diff[s.start + 1] += 1
            diff[s.end] -= 1
    blocked, depth = [], 0
    for p in range(n + 1):
        depth += diff[p]
        blocked.append(depth > 0)
    return blocked


def _covered_chars(n: int, protect: Sequence[Span]) -> list[bool]:
    """``covered[i]`` is True when character i belongs to a protected span."""
    diff = [0] * (n + 1)
    for s in protect:
        diff[s.start] += 1
        diff[s.end] -= 1
    covered, depth = [], 0
    for i in range(n):
        depth += diff[i]
        covered.append(depth > 0)
    return covered


def _strip(text: str, start: int, end: int, covered: list[bool] | None) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge whitespace that no protected span covers."""
    while start < end and text[start].isspace() and not (covered and covered[start]):
        start += 1
    while end > start and text[end - 1].isspace() and not (covered and covered[end - 1]):
        end -= 1
    return start, end


def _cap(
    text: str, start: int, end: int, max_len: int, blocked: list[bool] | None
) -> tuple[int, bool]:
    """Where to cut ``[start, end)`` (longer than ``max_len``): the last comma, else the last
    unblocked position within ``max_len``, else ``start + max_len``. Returns ``(cut, forced)``.
    """
    limit = start + max_len
    free = (lambda p: True) if blocked is None else (lambda p: not blocked[p])
    for p in range(limit, start, -1):
        if text[p - 1] in COMMAS and free(p):
            return p, False
    for p in range(limit, start, -1):
        if free(p):
            return p, False
    return limit, True


def split_text(text: str, max_len: int, protect: Sequence[Span] = ()) -> list[tuple[int, int]]:
    """Split ``text`` into sorted, disjoint, non-empty ``(start, end)`` ranges of <= ``max_len``.

    Every non-whitespace character lies in exactly one range; ranges do not begin or end with
    whitespace unless a protected span covers it. Cuts avoid the inside of ``protect`` spans when
    possible (see :func:`spans_cut` for the ones that could not be kept whole).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = len(text)
    protect = list(protect)
    _check_spans(n, protect, "split_text")
    blocked = _blocked_boundaries(n, protect) if protect else None
    covered = _covered_chars(n, protect) if protect else None

    cuts = [m.end() for m in _SENTENCE_END_RE.finditer(text)]
    if blocked is not None:
        cuts = [p for p in cuts if not blocked[p]]
    ranges: list[tuple[int, int]] = []
    start = 0
    for stop in [*cuts, n]:
        a, b = _strip(text, start, stop, covered)
        start = stop
        while b - a > max_len:
            cut, _ = _cap(text, a, b, max_len, blocked)
            ranges.append(_strip(text, a, cut, covered))
            a, b = _strip(text, cut, b, covered)
        if b > a:
            ranges.append((a, b))
    return [r for r in ranges if r[1] > r[0]]


def spans_cut(ranges: Sequence[tuple[int, int]], spans: Iterable[Span]) -> list[Span]:
    """The spans not wholly inside one range (a cut falls inside them)."""
    starts = [a for a, _ in ranges]
    return [s for s in spans if _containing(ranges, starts, s) is None]


def _containing(ranges: Sequence[tuple[int, int]], starts: list[int], span: Span) -> int | None:
    k = bisect.bisect_right(starts, span.start) - 1
    if k >= 0 and span.end <= ranges[k][1]:
        return k
    return None


def split_document(doc: Document, max_len: int, stats: SplitStats | None = None, *,
                   guided: bool = True) -> list[Sentence]:
    """Split one document into :class:`Sentence` pieces carrying their (relative) spans.

    ``guided``: the gold spans protect the cuts (training text); False: the text is cut as unseen
    text is, gold ignored (evaluation and pool text). A span that a cut falls inside is left out
    of the sentences and counted in ``stats`` (``spans_dropped``, ``dropped``); all other spans
    are kept exactly.
    """
    where = f"document {doc.id!r}" + (f" ({doc.source})" if doc.source else "")
    _check_spans(len(doc.text), doc.spans, where)
    ranges = split_text(doc.text, max_len, protect=doc.spans if guided else ())
    starts = [a for a, _ in ranges]
    sentences = [
        Sentence(doc.id, k, a, doc.text[a:b], []) for k, (a, b) in enumerate(ranges)
    ]
    dropped = []
    for span in doc.spans:
        k = _containing(ranges, starts, span)
        if k is None:
            dropped.append(span)
        else:
            sentences[k].spans.append(span.shifted(-ranges[k][0]))
    if stats is not None:
        stats.documents += 1
        stats.sentences += len(sentences)
        stats.spans += len(doc.spans)
        stats.spans_kept += len(doc.spans) - len(dropped)
        stats.spans_dropped += len(dropped)
        room = max(0, stats.max_listed - len(stats.dropped))
        stats.dropped.extend((doc.id, s) for s in dropped[:room])
    return sentences


def merge_predictions(
    sentences: Iterable[Sentence], spans_per_sentence: Iterable[list[Span]]
) -> dict[str, list[Span]]:
    """Map per-sentence spans back to document offsets: ``{doc_id: sorted spans}``.

    Every document with a sentence appears (with ``[]`` when nothing was predicted). The two
    iterables must have the same length; a span past its sentence's end raises ``ValueError``.
    """
    out: dict[str, list[Span]] = {}
    preds = iter(spans_per_sentence)
    count = 0
    for sent in sentences:
        try:
            spans = next(preds)
        except StopIteration:
            raise ValueError(f"fewer span lists ({count}) than sentences") from None
        count += 1
        doc_spans = out.setdefault(sent.doc_id, [])
        for s in spans:
            if s.end > len(sent.text):
                raise ValueError(
                    f"document {sent.doc_id!r} sentence {sent.sent_id}: span {s} ends past the "
                    f"sentence length {len(sent.text)}"
                )
            doc_spans.append(s.shifted(sent.offset))
    extra = sum(1 for _ in preds)
    if extra:
        raise ValueError(f"more span lists ({count + extra}) than sentences ({count})")
    for spans in out.values():
        spans.sort()
    return out
