"""Corpus statistics: documents, entities per type and the reader's accounting, as one dict."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .document import ReadReport
from .readers import read_documents, read_unlabeled

MAX_ERRORS = 20


def corpus_stats(fmt: str, path: str | Path, *, max_errors: int = MAX_ERRORS,
                 **kw: Any) -> dict[str, Any]:
    """Read ``path`` once (streaming) and summarise it.

    ``kw`` goes to ``read_documents`` (``overlap_policy``, ``types``, ``strict``) or, for
    ``fmt="text"``, to ``read_unlabeled`` (``column``, ``per_line``, ``limit``). Returns
    ``{"format", "path", "documents", "characters", "entities": {TYPE: n, ..., "total": n},
    "read", "kept", "rejected", "repaired", "spans_dropped", "reasons", "errors": [first
    issues as "file:line: problem (action)"], "encodings"}``.
    """
    report = ReadReport()
    if fmt == "text":
        docs = read_unlabeled(path, report=report, **kw)
    else:
        docs = read_documents(fmt, path, report=report, **kw)
    types: Counter = Counter()
    n_docs = 0
    n_chars = 0
    for doc in docs:
        n_docs += 1
        n_chars += len(doc.text)
        types.update(s.type for s in doc.spans)
    entities: dict[str, int] = dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
    entities["total"] = sum(types.values())
    errors = [_issue_line(i) for i in report.issues[:max_errors]]
    return {
        "format": fmt,
        "path": str(path),
        "documents": n_docs,
        "characters": n_chars,
        "entities": entities,
        "read": report.read,
        "kept": report.kept,
        "rejected": report.rejected,
        "repaired": report.repaired,
        "spans_dropped": report.spans_dropped,
        "reasons": dict(sorted(report.reasons.items())),
        "errors": errors,
        "encodings": dict(sorted(report.encodings.items())),
    }


def _issue_line(issue) -> str:
    where = f"{issue.path}:{issue.line}" if issue.line is not None else issue.path
    return f"{where}: {issue.problem} ({issue.action})"
