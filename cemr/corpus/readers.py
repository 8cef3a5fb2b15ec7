"""Format registry and dispatch: every format read into the one ``Document`` model.

``read_documents(fmt, path)`` streams documents (a generator: a corpus is never held in a list)
and fills a ``ReadReport``. The path, the options and the format are checked when it is called
(``fmt="auto"`` detects the format, an explicit one must fit the data: see ``cemr.corpus.detect``);
the files are read as the documents are consumed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from .detect import AUTO, FORMATS, LABELED_FORMATS, check_fit, detect_format, resolve_format
from .document import Document, ReadReport
from .formats import brat, ccks2017, jsonl, text, yidu
from .formats._common import require_path
from .validate import check_policy

INPUT_FORMATS = (AUTO,) + FORMATS

_LABELED: dict[str, Callable[..., Iterator[Document]]] = {
    "ccks2017": ccks2017.read,
    "yidu": yidu.read,
    "jsonl": jsonl.read,
    "brat": brat.read,
}


def read_documents(fmt: str, path: str | Path, *, report: ReadReport | None = None,
                   overlap_policy: str = "keep_longest", types: set[str] | None = None,
                   strict: bool = False) -> Iterator[Document]:
    """Stream the documents of ``path`` in format ``fmt`` (one of ``INPUT_FORMATS``).

    ``auto`` reads the format ``detect_format`` finds (``text`` too: documents without spans; use
    ``resolve_format(..., labeled=True)`` first where labels are required). An explicit format
    that does not fit the data raises ``CorpusError`` naming the one that does. A labeled format
    used where only the text matters yields the document text (``originalText`` of a Yidu
    record, for instance), never the file's syntax.

    ``report`` (optional) receives the accounting: read / kept / rejected / repaired, reasons,
    issues (file, line, problem) and the encodings seen. ``overlap_policy``: ``keep_longest``,
    ``keep_first`` or ``error``; ``types``: the allowed entity types (others are dropped);
    ``strict``: raise ``CorpusError`` at the first problem instead of recording it. For ``text``
    the labels options do not apply (see ``read_unlabeled``).
    """
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; known: {', '.join(INPUT_FORMATS)}")
    check_policy(overlap_policy)
    p = require_path(path)
    detection = detect_format(p)
    if fmt == AUTO:
        fmt = detection.format
    check_fit(fmt, p, detection)
    report = report if report is not None else ReadReport()
    if fmt == "text":
        return text.read(p, report=report, strict=strict)
    frozen = frozenset(types) if types is not None else None
    return _LABELED[fmt](p, report=report, overlap_policy=overlap_policy, types=frozen,
                         strict=strict)


def read_unlabeled(path: str | Path, *, column: str | None = None, per_line: bool = True,
                   limit: int | None = None, report: ReadReport | None = None,
                   strict: bool = False) -> Iterator[Document]:
    """Stream unlabeled documents (format ``text``) from a file or a directory.

    See ``cemr.corpus.formats.text`` for the file kinds (.txt / extensionless, .jsonl, .json,
    .csv, .tsv), ``column`` and ``per_line``; ``limit`` stops after that many documents.
    Empty lines and files are counted as rejected (reason ``empty``); ids are ``relpath:line``.
    A directory laid out as a labeled corpus (CCKS2017, BRAT) raises ``CorpusError``: read it
    with its format (``read_documents``), whose documents are its texts.
    """
    p = require_path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    check_fit("text", p, detect_format(p))
    report = report if report is not None else ReadReport()
    return text.read(p, column=column, per_line=per_line, limit=limit, report=report,
                     strict=strict)


__all__ = ["AUTO", "FORMATS", "INPUT_FORMATS", "LABELED_FORMATS", "read_documents",
           "read_unlabeled", "resolve_format", "detect_format"]
