"""The one data model of cemr: documents with typed character spans.

Every offset inside cemr is a 0-based character offset into ``Document.text`` and every span is
half-open: ``text[start:end]`` is the mention (end exclusive). Readers convert their format's
convention (CCKS2017 is end inclusive, for instance) at the boundary.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Span:
    """A typed mention ``text[start:end]`` (end exclusive)."""

    start: int
    end: int
    type: str

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"bad span offsets [{self.start}, {self.end}) for type {self.type!r}")

    def __len__(self) -> int:
        return self.end - self.start

    def overlaps(self, other: "Span") -> bool:
        return self.start < other.end and other.start < self.end

    def shifted(self, delta: int) -> "Span":
        return Span(self.start + delta, self.end + delta, self.type)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "type": self.type}


@dataclass
class Document:
    """One record (an EMR, a section of one, or an unlabeled text).

    ``spans`` is sorted by (start, end, type); ``source`` names where the document was read from
    (``path`` or ``path:line``) so every later error can point back at the input.
    """

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spans = sorted(self.spans)

    def mention(self, span: Span) -> str:
        return self.text[span.start:span.end]

    def type_counts(self) -> Counter:
        return Counter(s.type for s in self.spans)


class CorpusError(ValueError):
    """Bad input, with the file, line (or record) and problem named."""

    def __init__(self, path: str, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class Issue:
    """One thing a reader noticed about one input record."""

    path: str
    line: int | None
    problem: str
    action: str  # "rejected" (record dropped), "repaired" (record kept, changed), "span_dropped"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "problem": self.problem, "action": self.action}

    def line_text(self) -> str:
        """``"file:line: problem (action)"``."""
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.problem} ({self.action})"


def capped(lines: list[str], total: int, limit: int) -> list[str]:
    """The first ``limit`` of ``lines`` and, when ``total`` is more, ``"... and N more"``."""
    shown = lines[:max(limit, 0)]
    if total > len(shown):
        shown.append(f"... and {total - len(shown)} more")
    return shown


@dataclass
class ReadReport:
    """Accounting of a read: every input record is read, then kept or rejected (with a reason).

    ``read == kept + rejected`` always holds; ``repaired`` counts kept records that were changed
    (a span dropped by the overlap policy, say) and ``spans_dropped`` the spans removed that way.
    ``issues`` keeps the first ``max_issues`` issues; ``noted`` counts them all.
    """

    read: int = 0
    kept: int = 0
    rejected: int = 0
    repaired: int = 0
    spans_read: int = 0
    spans_kept: int = 0
    spans_dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    encodings: Counter = field(default_factory=Counter)
    max_issues: int = 1000
    noted: int = 0

    def note(self, path: str, line: int | None, problem: str, action: str, reason: str) -> None:
        self.reasons[reason] += 1
        self.noted += 1
        if len(self.issues) < self.max_issues:
            self.issues.append(Issue(str(path), line, problem, action))

    def issue_lines(self, limit: int, action: str | None = None) -> list[str]:
        """The first ``limit`` issues (only those with ``action`` when given) as
        ``"file:line: problem (action)"``, then ``"... and N more"`` when there are more
        (counting those beyond ``max_issues`` too)."""
        chosen = [i for i in self.issues if action is None or i.action == action]
        if action is None:
            total = self.noted
        elif action == "rejected":
            total = self.rejected
        else:
            total = len(chosen)
        return capped([i.line_text() for i in chosen[:limit]], max(total, len(chosen)), limit)

    def to_dict(self, max_issues: int | None = None) -> dict[str, Any]:
        """The accounting as JSON-ready values; ``issues`` holds the first ``max_issues`` (all
        kept ones when None) and ``issues_left_out`` how many more there were."""
        shown = self.issues if max_issues is None else self.issues[:max_issues]
        return {
            "read": self.read,
            "kept": self.kept,
            "rejected": self.rejected,
            "repaired": self.repaired,
            "spans_read": self.spans_read,
            "spans_kept": self.spans_kept,
            "spans_dropped": self.spans_dropped,
            "reasons": dict(sorted(self.reasons.items())),
            "encodings": dict(sorted(self.encodings.items())),
            "issues": [i.to_dict() for i in shown],
            "issues_left_out": max(self.noted, len(self.issues)) - len(shown),
        }
