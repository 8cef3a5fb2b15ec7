"""Corpus statistics: documents, entities per type and the reader's accounting, as one dict."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .detect import resolve_format
from .document import CorpusError, ReadReport
from .readers import read_documents, read_unlabeled

MAX_ERRORS = 20


def corpus_stats(fmt: str, path: str | Path, *, max_errors: int = MAX_ERRORS,
                 **kw: Any) -> dict[str, Any]:
    """Read ``path`` once (streaming) and summarise it.

    ``fmt`` is ``auto`` (detected) or a format, which must fit the data (``CorpusError``
    otherwise, naming the one that fits). ``kw`` goes to ``read_documents`` (``overlap_policy``,
    ``types``, ``strict``) or, for ``text``, to ``read_unlabeled`` (``column``, ``per_line``,
    ``limit``). Returns ``{"format" (the one read), "detected" (how it was chosen), "path",
    "documents", "characters", "entities": {TYPE: n, ..., "total": n}, "read", "kept",
    "rejected", "repaired", "spans_dropped", "reasons", "errors": [the first ``max_errors``
    issues as "file:line: problem (action)", then "... and N more"], "encodings"}``.

    Raises ``CorpusError`` when records were read but none was kept: such a read is a failure,
    not an empty corpus.
    """
    fmt, detected = resolve_format(fmt, path, labeled=False)
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
    if report.read and not report.kept:
        errors = "".join(f"\n  {line}" for line in report.issue_lines(10))
        raise CorpusError(str(path), None, f"nothing could be read as {fmt}: 0 documents kept "
                                           f"of {report.read} records{errors}")
    entities: dict[str, int] = dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
    entities["total"] = sum(types.values())
    return {
        "format": fmt,
        "detected": detected,
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
        "errors": report.issue_lines(max_errors),
        "encodings": dict(sorted(report.encodings.items())),
    }
