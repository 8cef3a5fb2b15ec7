"""Helpers shared by the format readers: walking input paths and reading JSON lines."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..document import CorpusError, ReadReport
from ..encoding import (BinaryFileError, EncodingError, file_encoding, head_lines, iter_lines,
                        read_text)
from ..validate import (BAD_JSON, BAD_RECORD, BINARY, DECODE_ERROR, DUPLICATE_ID, EMPTY,
                        IGNORED, IGNORED_FILE, JSON_ARRAY, UNKNOWN_KEYS, RecordBuilder)

JSON_ARRAY_PROBLEM = (
    "the file is one JSON array, not JSON lines (one JSON object per line); convert it, e.g. "
    "python -c \"import json,sys; [print(json.dumps(r, ensure_ascii=False)) for r in "
    "json.load(sys.stdin)]\" < IN > OUT.jsonl")


def require_path(path: str | Path) -> Path:
    """``path`` as a Path; ``CorpusError`` when nothing is there."""
    p = Path(path)
    if not p.exists():
        raise CorpusError(str(p), None, "no such file or directory")
    return p


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``, recursively, in sorted relative-path order.

    Hidden files and directories (name starting with ``.``) are skipped: editors and version
    control leave them, and they are never corpus files.
    """
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk_files(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def relpath(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators; the file name when they are equal."""
    if path == root:
        return path.name
    return path.relative_to(root).as_posix()


def select_files(path: Path, accept: Callable[[Path], bool], report: ReadReport,
                 what: str) -> Iterator[tuple[Path, Path]]:
    """``(file, root)`` for ``path`` (a file) or every accepted file under it (a directory).

    Files under a directory that ``accept`` refuses are noted (reason ``ignored_file``), never
    skipped silently. ``CorpusError`` when a directory holds no accepted file at all.
    """
    if path.is_file():
        yield path, path
        return
    found = False
    for file in walk_files(path):
        if accept(file):
            found = True
            yield file, path
        else:
            report.note(str(file), None, f"not a {what} file; ignored", IGNORED, IGNORED_FILE)
    if not found:
        raise CorpusError(str(path), None, f"no {what} files found")


def note_encoding(report: ReadReport, encoding: str) -> None:
    """Count one file read in ``encoding``."""
    report.encodings[encoding] += 1


def text_encoding(file: Path, report: ReadReport,
                  reject: Callable[[str, str], None]) -> str | None:
    """The encoding of ``file`` (counted in the report), or None after calling
    ``reject(problem, reason)``: reason ``binary`` for binary content, ``decode_error`` for text
    in none of the supported encodings."""
    try:
        encoding = file_encoding(file)
    except BinaryFileError as exc:
        reject(f"{exc}: not a text file", BINARY)
        return None
    except EncodingError as exc:
        reject(str(exc), DECODE_ERROR)
        return None
    note_encoding(report, encoding)
    return encoding


def starts_json_array(file: Path) -> bool:
    """True when the first non-blank line of the text file ``file`` starts with ``[``."""
    try:
        _, lines, _ = head_lines(file, limit=1, max_bytes=1 << 16)
    except EncodingError:
        return False
    return bool(lines) and lines[0].lstrip().startswith("[")


def unknown_keys_problem(record: dict[str, Any], known: frozenset[str], what: str) -> str | None:
    """Why ``record`` has keys its format does not define (naming them and the expected ones),
    or None. Such a record is rejected, never read with its unknown parts ignored: ``"spans"``
    instead of ``"entities"`` would otherwise be a document without entities."""
    unknown = sorted(set(record) - known)
    if not unknown:
        return None
    return (f"unknown key(s) {', '.join(map(repr, unknown))} in a {what} record "
            f"(expected keys: {', '.join(sorted(known))})")


def reject_unknown_keys(record: dict[str, Any], known: frozenset[str], what: str,
                        builder: RecordBuilder) -> bool:
    """Reject the record (reason ``unknown_keys``) when it has unknown keys; True if rejected."""
    problem = unknown_keys_problem(record, known, what)
    if problem is None:
        return False
    builder.reject(problem, UNKNOWN_KEYS)
    return True


def iter_json_records(file: Path, report: ReadReport, *, strict: bool, overlap_policy: str,
                      types: set[str] | None,
                      ) -> Iterator[tuple[int, RecordBuilder, dict[str, Any]]]:
    """``(line, builder, record)`` for each JSON object line of ``file``.

    Every line is one record (the builder has already counted it as read). Lines that are blank
    (reason ``empty``), do not decode, do not parse or are not JSON objects are rejected here
    (with file:line and the JSON error) and not yielded. An empty file, a binary one, one in no
    supported encoding, or one holding a JSON array (not JSON lines) is one rejected record.
    """
    def builder_at(line: int | None) -> RecordBuilder:
        return RecordBuilder(report, path=str(file), line=line, strict=strict,
                             overlap_policy=overlap_policy, types=types)

    if file.stat().st_size == 0:
        builder_at(None).reject("empty file", EMPTY)
        return
    encoding = text_encoding(file, report,
                             lambda problem, reason: builder_at(None).reject(problem, reason))
    if encoding is None:
        return
    if starts_json_array(file):
        builder_at(None).reject(JSON_ARRAY_PROBLEM, JSON_ARRAY)
        return
    for number, text, raw in iter_lines(file, encoding):
        builder = builder_at(number)
        if text is None:
            builder.reject(f"line does not decode as {encoding}", DECODE_ERROR)
            continue
        if not text.strip():
            builder.reject("empty line", EMPTY)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            builder.reject(f"invalid JSON: {exc.msg} (column {exc.colno})", BAD_JSON)
            continue
        if not isinstance(record, dict):
            builder.reject(f"expected a JSON object, got {type(record).__name__}", BAD_RECORD)
            continue
        yield number, builder, record


def annotation_encoding(ann: Path, builder: RecordBuilder, report: ReadReport) -> str | None:
    """The encoding of an annotation file, noted in the report; None after rejecting the record."""
    return text_encoding(ann, report,
                         lambda problem, reason: builder.reject(f"annotation file {ann}: {problem}",
                                                                reason))


def annotation_lines(ann: Path, encoding: str, builder: RecordBuilder) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of every non-blank annotation line; a line that does not decode is
    dropped as a bad span (file and line named)."""
    for number, line, _ in iter_lines(ann, encoding):
        if line is None:
            builder.bad_span(f"line does not decode as {encoding}; span dropped", DECODE_ERROR,
                             path=str(ann), line=number)
            continue
        if line.strip():
            yield number, line


def read_whole_text(file: Path, report: ReadReport, builder: RecordBuilder) -> str | None:
    """The text of a one-document file, or None after rejecting the record (decode error)."""
    try:
        text, encoding = read_text(file)
    except BinaryFileError as exc:
        builder.reject(f"{exc}: not a text file", BINARY)
        return None
    except EncodingError as exc:
        builder.reject(str(exc), DECODE_ERROR)
        return None
    note_encoding(report, encoding)
    return text


class IdRegistry:
    """Rejects a second record with an id already seen in this read."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def claim(self, doc_id: str, source: str, builder: RecordBuilder) -> bool:
        first = self.seen.get(doc_id)
        if first is not None:
            builder.reject(f"duplicate document id {doc_id!r} (first at {first})", DUPLICATE_ID)
            return False
        self.seen[doc_id] = source
        return True


def int_field(value: Any) -> int | None:
    """``value`` as an int offset when it is one (``bool`` and ``float`` are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


__all__ = ["require_path", "walk_files", "relpath", "select_files", "iter_json_records",
           "read_whole_text", "IdRegistry", "int_field", "note_encoding", "text_encoding",
           "starts_json_array", "unknown_keys_problem", "reject_unknown_keys",
           "JSON_ARRAY_PROBLEM"]
