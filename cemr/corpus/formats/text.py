"""Unlabeled text (format ``text``): plain text, JSON lines, JSON arrays, CSV and TSV files.

``path`` is one file or a directory (recursive, sorted by relative path, so the order and the ids
are deterministic). By file name:

* ``.txt`` or no extension: one document per line (``per_line=True``) or per file. The content
  decides when it is not plain text (``content_kind``): a first non-blank line starting with
  ``{`` means JSON lines and one starting with ``[`` a JSON array (read as ``.jsonl`` / ``.json``
  below, so a Yidu-S4K ``.txt`` file gives its ``originalText``, never JSON syntax); with
  ``column`` given, the file is a table (TSV when its first line holds a tab, else CSV), since a
  column only exists in one;
* ``.jsonl``: one record per line, the text in field ``column`` (default: ``text``, else
  ``originalText``);
* ``.json``: a JSON array of such records, or JSON lines when the file does not start with ``[``;
* ``.csv`` / ``.tsv`` (``csv`` quoting rules): ``column`` is a header name (the first row is the
  header; default ``text``/``originalText``) or a 0-based index written as digits (then there is
  no header row and every row is data). A header without the named column raises
  ``CorpusError`` (a configuration mistake, not a problem of one record).

A file given directly with another extension is read as plain text; under a directory such files
are noted (reason ``ignored_file``). Texts are stripped of surrounding whitespace. Every line or
record is one read record: empty ones are rejected with reason ``empty``, an empty file is one
rejected record; undecodable lines are rejected with ``decode_error``, a binary file is one record
rejected with ``binary``. The encoding of each file is detected (UTF-8, UTF-8 with BOM, UTF-16
with BOM, GB18030) and counted in ``report.encodings``.

Document ids: ``<relpath>:<line>`` (``<relpath>:<record>`` for a JSON array; ``<relpath>`` for a
whole file), with ``relpath`` relative to the directory given (the file name for a file).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from ..document import CorpusError, Document, ReadReport
from ..encoding import BinaryFileError, EncodingError, head_lines, iter_lines, read_text
from ..validate import (BAD_JSON, BAD_RECORD, BINARY, DECODE_ERROR, EMPTY, MISSING_FIELD,
                        RecordBuilder)
from ._common import (iter_json_records, note_encoding, relpath, require_path, select_files,
                      starts_json_array, text_encoding)

LINE_SUFFIXES = (".txt", "")
DEFAULT_FIELDS = ("text", "originalText")
SUFFIXES = LINE_SUFFIXES + (".jsonl", ".json", ".csv", ".tsv")


def file_kind(path: Path) -> str:
    """``lines``, ``jsonl``, ``json``, ``csv`` or ``tsv`` by file name (unknown -> ``lines``)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".tsv"):
        return suffix[1:]
    return "lines"


def content_kind(path: Path, column: str | None = None) -> str:
    """The kind of a ``lines`` file (``.txt`` or extensionless) by its content: ``jsonl`` (first
    non-blank line starts with ``{``), ``json`` (with ``[``), ``tsv`` / ``csv`` (``column``
    given: tab in the first line or not), else ``lines``. Only the file's beginning is read; a
    file that cannot be decoded is ``lines`` (its reader then reports why)."""
    try:
        _, lines, _ = head_lines(path, limit=1, max_bytes=1 << 16)
    except EncodingError:
        return "lines"
    first = lines[0].lstrip() if lines else ""
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("["):
        return "json"
    if column is not None:
        return "tsv" if "\t" in first else "csv"
    return "lines"


def _accept(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def read(path: str | Path, *, column: str | None = None, per_line: bool = True,
         limit: int | None = None, report: ReadReport, strict: bool = False
         ) -> Iterator[Document]:
    """Stream unlabeled documents (see the module docstring); stops after ``limit`` documents."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    root = require_path(path)
    if limit == 0:
        return
    produced = 0
    for file, base in select_files(root, _accept, report, "text (.txt/.jsonl/.json/.csv/.tsv)"):
        rel = relpath(file, base)
        kind = file_kind(file)
        if kind == "lines":
            kind = content_kind(file, column)
        if kind == "lines":
            docs = _read_lines(file, rel, per_line, report, strict)
        elif kind in ("jsonl", "json"):
            docs = _read_json(file, rel, column, report, strict)
        else:
            docs = _read_table(file, rel, column, "\t" if kind == "tsv" else ",", report, strict)
        for doc in docs:
            yield doc
            produced += 1
            if limit is not None and produced >= limit:
                return


def _builder(report: ReadReport, file: Path, line: int | None, strict: bool) -> RecordBuilder:
    return RecordBuilder(report, path=str(file), line=line, strict=strict)


def _finish(builder: RecordBuilder, doc_id: str, text: str, source: str,
            what: str) -> Document | None:
    text = text.strip()
    if not text:
        builder.reject(f"empty {what}", EMPTY)
        return None
    return builder.build(doc_id, text, source=source)


def _file_encoding(file: Path, report: ReadReport, strict: bool) -> str | None:
    """The encoding (counted) of a file read record by record, or None after rejecting the file
    as one record: empty, binary or undecodable."""
    if file.stat().st_size == 0:
        _builder(report, file, None, strict).reject("empty file", EMPTY)
        return None
    return text_encoding(file, report, lambda problem, reason: _builder(
        report, file, None, strict).reject(problem, reason))


def _read_lines(file: Path, rel: str, per_line: bool, report: ReadReport,
                strict: bool) -> Iterator[Document]:
    if not per_line:
        builder = _builder(report, file, None, strict)
        try:
            text, encoding = read_text(file)
        except BinaryFileError as exc:
            builder.reject(f"{exc}: not a text file", BINARY)
            return
        except EncodingError as exc:
            builder.reject(str(exc), DECODE_ERROR)
            return
        note_encoding(report, encoding)
        doc = _finish(builder, rel, text, str(file), "file")
        if doc is not None:
            yield doc
        return
    encoding = _file_encoding(file, report, strict)
    if encoding is None:
        return
    for number, text, _ in iter_lines(file, encoding):
        builder = _builder(report, file, number, strict)
        if text is None:
            builder.reject(f"line does not decode as {encoding}", DECODE_ERROR)
            continue
        doc = _finish(builder, f"{rel}:{number}", text, f"{file}:{number}", "line")
        if doc is not None:
            yield doc


def _field(record: dict, column: str | None) -> tuple[str | None, str]:
    """``(text or None, the field name tried)`` of one JSON record."""
    names = (column,) if column is not None else DEFAULT_FIELDS
    for name in names:
        if name in record:
            value = record[name]
            return (value if isinstance(value, str) else None), name
    return None, " or ".join(names)


def _read_json(file: Path, rel: str, column: str | None, report: ReadReport,
               strict: bool) -> Iterator[Document]:
    if file.suffix.lower() != ".jsonl" and starts_json_array(file):
        yield from _read_json_array(file, rel, column, report, strict)
        return
    for number, builder, record in iter_json_records(file, report, strict=strict,
                                                     overlap_policy="keep_longest", types=None):
        text, name = _field(record, column)
        if text is None:
            builder.reject(f"no string field {name!r} (keys: {', '.join(sorted(record))})",
                           MISSING_FIELD)
            continue
        doc = _finish(builder, f"{rel}:{number}", text, f"{file}:{number}", f"field {name!r}")
        if doc is not None:
            yield doc


def _read_json_array(file: Path, rel: str, column: str | None, report: ReadReport,
                     strict: bool) -> Iterator[Document]:
    """A ``.json`` file holding one array of records (parsed whole: such files are small)."""
    try:
        text, encoding = read_text(file)
    except BinaryFileError as exc:
        _builder(report, file, None, strict).reject(f"{exc}: not a text file", BINARY)
        return
    except EncodingError as exc:
        _builder(report, file, None, strict).reject(str(exc), DECODE_ERROR)
        return
    note_encoding(report, encoding)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        _builder(report, file, exc.lineno, strict).reject(
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", BAD_JSON)
        return
    if not isinstance(records, list):
        _builder(report, file, None, strict).reject("expected a JSON array", BAD_RECORD)
        return
    for k, record in enumerate(records, 1):
        builder = _builder(report, file, k, strict)
        if not isinstance(record, dict):
            builder.reject(f"record #{k}: expected a JSON object, got {type(record).__name__}",
                           BAD_RECORD)
            continue
        value, name = _field(record, column)
        if value is None:
            builder.reject(f"record #{k}: no string field {name!r}", MISSING_FIELD)
            continue
        doc = _finish(builder, f"{rel}:{k}", value, f"{file}#{k}", f"field {name!r}")
        if doc is not None:
            yield doc


def _column_index(header: list[str], column: str | None, file: Path) -> int:
    names = (column,) if column is not None else DEFAULT_FIELDS
    for name in names:
        if name in header:
            return header.index(name)
    raise CorpusError(str(file), 1, f"no column {' or '.join(map(repr, names))} in the header "
                                    f"{header!r} (pass column=<name> or a 0-based index)")


def _read_table(file: Path, rel: str, column: str | None, delimiter: str, report: ReadReport,
                strict: bool) -> Iterator[Document]:
    encoding = _file_encoding(file, report, strict)
    if encoding is None:
        return
    state: dict[str, int | None] = {"first": None}

    def decoded() -> Iterator[str]:
        for number, text, _ in iter_lines(file, encoding, keep_ends=True):
            if text is None:
                _builder(report, file, number, strict).reject(
                    f"line does not decode as {encoding}", DECODE_ERROR)
                continue
            if state["first"] is None:
                state["first"] = number
            yield text

    reader = csv.reader(decoded(), delimiter=delimiter)
    index = int(column) if column is not None and column.isdigit() else None
    while True:
        state["first"] = None
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            _builder(report, file, state["first"], strict).reject(f"bad CSV row: {exc}",
                                                                 BAD_RECORD)
            continue
        number = state["first"]
        if index is None:  # this first row is the header
            if number == 1 and not any(c.strip() for c in row):
                _builder(report, file, number, strict).reject("empty header row", EMPTY)
                continue
            index = _column_index(row, column, file)
            continue
        builder = _builder(report, file, number, strict)
        if index >= len(row):
            if not any(c.strip() for c in row):
                builder.reject("empty row", EMPTY)
            else:
                builder.reject(f"row has {len(row)} columns, column {index} is missing",
                               MISSING_FIELD)
            continue
        doc = _finish(builder, f"{rel}:{number}", row[index], f"{file}:{number}",
                      f"column {index}")
        if doc is not None:
            yield doc
