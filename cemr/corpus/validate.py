"""Validation shared by every reader: pure checks plus the accounting of one input record.

The checks are small pure functions (``offset_problem``, ``mention_problem``, ``type_problem``,
``split_duplicates``, ``resolve_overlaps``, ``find_overlaps``). ``RecordBuilder`` applies them to
one record a reader has parsed and keeps the ``ReadReport`` honest: every record is read, then
kept or rejected exactly once (``read == kept + rejected``), every annotation is read, then kept
or dropped (``spans_read == spans_kept + spans_dropped``; the spans of a rejected record count as
dropped), and every problem becomes ``report.note(path, line, problem, action, reason)``.

Policies:

* span-level problems (offsets out of range, mention mismatch, unknown type, an annotation line
  that does not parse, a discontinuous BRAT span, a duplicate) drop that span; the record is kept
  and counted as repaired;
* overlapping or nested spans follow ``overlap_policy``: ``keep_longest`` (the longest span wins,
  ties: the earlier start, then the earlier annotation), ``keep_first`` (text order: the earlier
  start wins, ties: the longer span, then the earlier annotation), both counted as repaired; or
  ``error``: the record is rejected (``CorpusError`` when strict);
* record-level problems (empty text, malformed JSON, a missing field, unknown keys, an
  undecodable line) reject the record; a binary file, or a JSON array given where JSON lines are
  expected, is one rejected record.

``strict=True`` raises ``CorpusError`` (file, line, problem) at the first problem instead of
recording it. Overlaps resolved by ``keep_longest``/``keep_first`` are the chosen policy rather
than a problem of the data, so they do not raise; use ``overlap_policy="error"`` for that.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .document import CorpusError, Document, ReadReport, Span

POLICIES = ("keep_longest", "keep_first", "error")

# reasons: the keys of ReadReport.reasons
EMPTY = "empty"
BAD_JSON = "bad_json"
BAD_RECORD = "bad_record"
MISSING_FIELD = "missing_field"
DECODE_ERROR = "decode_error"
BINARY = "binary"
JSON_ARRAY = "json_array"
UNKNOWN_KEYS = "unknown_keys"
MISSING_FILE = "missing_file"
DUPLICATE_ID = "duplicate_id"
BAD_LINE = "bad_line"
BAD_ENTITY = "bad_entity"
BAD_OFFSETS = "bad_offsets"
MENTION_MISMATCH = "mention_mismatch"
UNKNOWN_TYPE = "unknown_type"
DISCONTINUOUS = "discontinuous"
DUPLICATE_SPAN = "duplicate_span"
OVERLAP = "overlap"
IGNORED_FILE = "ignored_file"

# actions of Issue
REJECTED = "rejected"
REPAIRED = "repaired"
SPAN_DROPPED = "span_dropped"
IGNORED = "ignored"


@dataclass(frozen=True)
class RawSpan:
    """An annotation as a reader parsed it, already converted to end-exclusive offsets.

    ``path``/``line`` say where it was written (the annotation file may differ from the text
    file); ``raw`` is the annotation as written, quoted in messages.
    """

    start: int
    end: int
    type: str
    mention: str | None = None
    path: str = ""
    line: int | None = None
    raw: str = ""

    def span(self) -> Span:
        return Span(self.start, self.end, self.type)

    def describe(self) -> str:
        shown = self.raw or f"{self.type} [{self.start}, {self.end})"
        return f"annotation {shown!r}"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"overlap_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def is_empty_text(text: str) -> bool:
    return not text or text.isspace()


def offset_problem(start: int, end: int, length: int) -> str | None:
    """Why ``[start, end)`` is not a non-empty span of a text of ``length`` chars, or None."""
    if start < 0:
        return f"negative start {start}"
    if end <= start:
        return f"empty or reversed span [{start}, {end})"
    if end > length:
        return f"end {end} beyond the text (length {length})"
    return None


def mention_problem(text: str, start: int, end: int, mention: str | None,
                    normalise: Callable[[str], str] | None = None) -> str | None:
    """Why the written ``mention`` differs from ``text[start:end]``, or None (also when absent)."""
    if mention is None:
        return None
    found = text[start:end]
    if normalise is not None:
        same = normalise(found) == normalise(mention)
    else:
        same = found == mention
    if same:
        return None
    return f"mention {mention!r} differs from the text {found!r} at [{start}, {end})"


def type_problem(type_: str, types: set[str] | frozenset[str] | None) -> str | None:
    if not type_ or type_ != type_.strip():
        return f"bad entity type {type_!r}"
    if types is not None and type_ not in types:
        return f"unknown entity type {type_!r} (allowed: {', '.join(sorted(types))})"
    return None


def span_problem(text: str, raw: RawSpan, types: set[str] | frozenset[str] | None,
                 normalise: Callable[[str], str] | None = None) -> tuple[str, str] | None:
    """The first problem of one annotation against its text as ``(reason, problem)``, or None."""
    problem = type_problem(raw.type, types)
    if problem is not None:
        return UNKNOWN_TYPE, problem
    problem = offset_problem(raw.start, raw.end, len(text))
    if problem is not None:
        return BAD_OFFSETS, problem
    problem = mention_problem(text, raw.start, raw.end, raw.mention, normalise)
    if problem is not None:
        return MENTION_MISMATCH, problem
    return None


def split_duplicates(spans: Iterable[RawSpan]) -> tuple[list[RawSpan], list[RawSpan]]:
    """``(unique, duplicates)``: the first annotation of each (start, end, type) is kept."""
    seen: set[tuple[int, int, str]] = set()
    unique: list[RawSpan] = []
    dups: list[RawSpan] = []
    for raw in spans:
        key = (raw.start, raw.end, raw.type)
        (dups if key in seen else unique).append(raw)
        seen.add(key)
    return unique, dups


def find_overlaps(spans: Iterable[RawSpan]) -> list[tuple[RawSpan, RawSpan]]:
    """Pairs ``(a, b)`` with ``b`` overlapping or nested in an earlier-starting ``a``.

    Every span that overlaps some other span appears in at least one pair.
    """
    ordered = sorted(spans, key=lambda r: (r.start, -r.end))
    pairs: list[tuple[RawSpan, RawSpan]] = []
    reach: RawSpan | None = None  # the span reaching furthest right so far
    for raw in ordered:
        if reach is not None and raw.start < reach.end:
            pairs.append((reach, raw))
        if reach is None or raw.end > reach.end:
            reach = raw
    return pairs


def resolve_overlaps(spans: list[RawSpan], policy: str
                     ) -> tuple[list[RawSpan], list[tuple[RawSpan, RawSpan]]]:
    """Greedy resolution: ``(kept, [(dropped, winner), ...])``; ``kept`` has no overlaps.

    ``keep_longest`` visits spans longest first, ``keep_first`` in text order; a span is kept
    when it overlaps none kept before it. ``error`` keeps everything (the caller checks
    ``find_overlaps``). Ties fall to the earlier annotation, so the result is deterministic.
    """
    check_policy(policy)
    if policy == "error":
        return list(spans), []
    indexed = list(enumerate(spans))
    if policy == "keep_longest":
        indexed.sort(key=lambda p: (-(p[1].end - p[1].start), p[1].start, p[0]))
    else:
        indexed.sort(key=lambda p: (p[1].start, -(p[1].end - p[1].start), p[0]))
    starts: list[int] = []
    kept: list[RawSpan] = []  # sorted by start, pairwise disjoint
    dropped: list[tuple[RawSpan, RawSpan]] = []
    for _, raw in indexed:
        i = bisect.bisect_right(starts, raw.start)
        if i > 0 and kept[i - 1].end > raw.start:
            dropped.append((raw, kept[i - 1]))
        elif i < len(kept) and kept[i].start < raw.end:
            dropped.append((raw, kept[i]))
        else:
            starts.insert(i, raw.start)
            kept.insert(i, raw)
    return kept, dropped


class RecordBuilder:
    """The accounting of one input record, from ``read`` to ``kept`` or ``rejected``.

    A reader creates one per record (this counts it as read), feeds it the annotations it parsed
    (``add_span``) or could not parse (``bad_span``), then calls ``build`` (validates and returns
    the ``Document``, or None when rejected) or ``reject``.
    """

    def __init__(self, report: ReadReport, *, path: str, line: int | None = None,
                 strict: bool = False, overlap_policy: str = "keep_longest",
                 types: set[str] | frozenset[str] | None = None,
                 normalise: Callable[[str], str] | None = None):
        self.report = report
        self.path = str(path)
        self.line = line
        self.strict = strict
        self.overlap_policy = check_policy(overlap_policy)
        self.types = types
        self.normalise = normalise
        self.spans: list[RawSpan] = []
        self.changed = False
        self.done = False
        report.read += 1

    # -- problems ------------------------------------------------------------------------------

    def _note(self, path: str, line: int | None, problem: str, action: str, reason: str) -> None:
        if self.strict:
            raise CorpusError(path, line, problem)
        self.report.note(path, line, problem, action, reason)

    def bad_span(self, problem: str, reason: str, *, path: str | None = None,
                 line: int | None = None) -> None:
        """An annotation that cannot be used at all (does not parse, discontinuous...)."""
        self.report.spans_read += 1
        self._note(path or self.path, line if line is not None else self.line, problem,
                   SPAN_DROPPED, reason)
        self.report.spans_dropped += 1
        self.changed = True

    def add_span(self, raw: RawSpan) -> None:
        self.report.spans_read += 1
        self.spans.append(raw)

    def _drop(self, raw: RawSpan, problem: str, reason: str) -> None:
        self._note(raw.path or self.path, raw.line if raw.line is not None else self.line,
                   f"{raw.describe()}: {problem}; span dropped", SPAN_DROPPED, reason)
        self.report.spans_dropped += 1
        self.changed = True

    # -- outcome -------------------------------------------------------------------------------

    def reject(self, problem: str, reason: str, *, line: int | None = None) -> None:
        """Reject the whole record (its spans count as dropped)."""
        if self.done:
            raise RuntimeError("record already finished")
        self._note(self.path, line if line is not None else self.line, problem, REJECTED, reason)
        self.done = True
        self.report.rejected += 1
        self.report.spans_dropped += len(self.spans)

    def build(self, doc_id: str, text: str, *, source: str = "",
              meta: dict[str, Any] | None = None) -> Document | None:
        """Validate the collected spans against ``text``; the Document, or None if rejected."""
        if self.done:
            raise RuntimeError("record already finished")
        if is_empty_text(text):
            self.reject("empty document (no text)", EMPTY)
            return None
        valid: list[RawSpan] = []
        for raw in self.spans:
            found = span_problem(text, raw, self.types, self.normalise)
            if found is None:
                valid.append(raw)
            else:
                self._drop(raw, found[1], found[0])
        unique, dups = split_duplicates(valid)
        for raw in dups:
            self._drop(raw, "duplicate of an earlier annotation", DUPLICATE_SPAN)
        if self.overlap_policy == "error":
            pairs = find_overlaps(unique)
            if pairs:
                a, b = pairs[0]
                # invalid spans and duplicates were counted as dropped above; the rest now too
                self._reject_overlap(a, b, len(pairs), len(unique))
                return None
        kept, dropped = resolve_overlaps(unique, self.overlap_policy)
        for raw, winner in dropped:
            self.report.note(raw.path or self.path,
                             raw.line if raw.line is not None else self.line,
                             f"{raw.describe()} overlaps {winner.describe()}; dropped "
                             f"({self.overlap_policy})", SPAN_DROPPED, OVERLAP)
            self.report.spans_dropped += 1
            self.changed = True
        self.done = True
        self.report.kept += 1
        self.report.spans_kept += len(kept)
        if self.changed:
            self.report.repaired += 1
        return Document(id=doc_id, text=text, spans=[r.span() for r in kept], source=source,
                        meta=dict(meta or {}))

    def _reject_overlap(self, a: RawSpan, b: RawSpan, n_pairs: int, n_left: int) -> None:
        line = b.line if b.line is not None else self.line
        problem = (f"{b.describe()} overlaps {a.describe()} ({n_pairs} overlapping pair(s); "
                   f"overlap_policy=error)")
        if self.strict:
            raise CorpusError(b.path or self.path, line, problem)
        self.report.note(b.path or self.path, line, problem, REJECTED, OVERLAP)
        self.done = True
        self.report.rejected += 1
        self.report.spans_dropped += n_left
