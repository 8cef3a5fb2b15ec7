"""Which corpus format a path holds, decided from its content, and whether a given format fits.

``detect_format(path)`` looks at a sample, never at a whole corpus: for a directory, the file
names (the first ``SCAN_FILES``) and the first lines of the first ``SAMPLE_FILES`` non-empty text
files; for a file, its first ``SAMPLE_LINES`` non-blank lines (at most 1 MiB). It recognises

* ``ccks2017``: a directory (or its ``train/``) of ``<section>-<id>.txtoriginal.txt`` texts beside
  ``<section>-<id>.txt`` annotations, directly or in section directories;
* ``brat``: a directory of ``<name>.txt`` + ``<name>.ann`` pairs;
* ``yidu``: JSON lines whose records have ``originalText`` and ``entities`` (``start_pos``,
  ``end_pos``, ``label_type``);
* ``jsonl``: JSON lines whose records have ``text`` and ``entities`` (``start``, ``end``, ``type``);
* ``text``: everything else that is text: plain lines, CSV, TSV, JSON lines without entities,
  a JSON array (which labeled readers do not take: they need JSON lines).

Binary files raise ``CorpusError``, as do empty directories and directories whose sampled files
disagree on a labeled format. An empty file (or one of blank lines) is ``text`` that every format
"fits": its reader then counts it as one rejected record, and a caller that needs documents
(``corpus_stats``, the rejection policy, ``resolve_format(..., labeled=True)``) refuses it.

``Detection.fits`` lists the formats whose reader reads the data as it is meant: a Yidu file fits
``yidu`` and ``text`` (the text reader takes its ``originalText``), a CCKS2017 directory only
``ccks2017``. ``check_fit`` / ``resolve_format`` turn a misfit into a ``CorpusError`` naming the
format that fits, so a wrong ``format`` never reads as an empty or garbled corpus.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .document import CorpusError
from .encoding import BinaryFileError, EncodingError, head_lines
from .formats import ccks2017, text
from .formats._common import require_path, walk_files

AUTO = "auto"
FORMATS = ("ccks2017", "yidu", "jsonl", "brat", "text")
LABELED_FORMATS = tuple(f for f in FORMATS if f != "text")
SCAN_FILES = 500  # file names looked at in a directory
SAMPLE_FILES = 5  # text files of a directory whose content is sampled
SAMPLE_LINES = 5  # non-blank lines sampled per file

_REASONS = {
    "yidu": "JSON lines with originalText/entities (start_pos, end_pos, label_type)",
    "jsonl": "JSON lines with text/entities (start, end, type)",
}
_ENTITY_KEYS = {"yidu": {"start_pos", "end_pos", "label_type"}, "jsonl": {"start", "end", "type"}}


@dataclass(frozen=True)
class Detection:
    """What ``detect_format`` found: the ``format`` (one of ``FORMATS``), a short human
    ``reason`` and the formats whose reader ``fits`` the data."""

    format: str
    reason: str
    fits: frozenset[str]

    @property
    def labeled(self) -> bool:
        return self.format != "text"


def detect_format(path: str | Path) -> Detection:
    """The format of the corpus at ``path`` (a file or a directory), from a sample of its
    content; ``CorpusError`` when there is nothing to read, it is binary, or it is mixed."""
    p = require_path(path)
    return detect_directory(p) if p.is_dir() else detect_file(p)


def check_fit(fmt: str, path: str | Path, detection: Detection) -> None:
    """``CorpusError`` naming the format that fits when ``fmt`` does not fit ``detection``."""
    if fmt in detection.fits:
        return
    raise CorpusError(str(path), None,
                      f"format {fmt} does not fit: it looks like {detection.format} "
                      f"({detection.reason}); use format {detection.format} or auto")


def resolve_format(fmt: str, path: str | Path, *, labeled: bool) -> tuple[str, str]:
    """``(format, message)`` for reading ``path`` given ``fmt`` (``auto`` or one of ``FORMATS``).

    ``auto`` detects (message ``"detected yidu: JSON lines with ..."``); an explicit format is
    checked against the data (``CorpusError`` when it does not fit, naming the one that does;
    message ``"yidu: JSON lines with ..."``). With ``labeled``, data without labels (detected as
    ``text``) or ``fmt="text"`` raise ``CorpusError`` ("no labels found"). An unknown ``fmt``
    raises ``ValueError``.
    """
    if fmt != AUTO and fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; known: {', '.join((AUTO, *FORMATS))}")
    if labeled and fmt == "text":
        raise CorpusError(str(path), None, "format text has no labels; a labeled corpus is one "
                                           f"of {', '.join(LABELED_FORMATS)} (or auto)")
    detection = detect_format(path)
    if labeled and not detection.labeled:
        raise CorpusError(str(path), None,
                          f"no labels found: it looks like plain text ({detection.reason}); a "
                          f"labeled corpus is one of {', '.join(LABELED_FORMATS)}")
    if fmt == AUTO:
        return detection.format, f"detected {detection.format}: {detection.reason}"
    check_fit(fmt, path, detection)
    return fmt, f"{fmt}: {detection.reason}"


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def detect_file(file: Path) -> Detection:
    """The format of one file, from its first non-blank lines."""
    if file.stat().st_size == 0:
        return Detection("text", "an empty file: nothing to read", frozenset(FORMATS))
    try:
        _, lines, _ = head_lines(file, limit=SAMPLE_LINES)
    except BinaryFileError as exc:
        raise CorpusError(str(file), None, f"{exc}: not a text corpus") from None
    except EncodingError as exc:
        raise CorpusError(str(file), None, str(exc)) from None
    if not lines:
        return Detection("text", "only blank lines: nothing to read", frozenset(FORMATS))
    first = lines[0].lstrip()
    if first.startswith("["):
        return _json_array(lines)
    if first.startswith("{"):
        return _json_lines(file, lines)
    return _plain(lines)


def record_kind(record: dict[str, Any]) -> str | None:
    """``yidu``, ``jsonl`` (labeled records), ``text`` (a text field, no entities) or None (no
    known text field, or entities whose keys fit neither labeled format)."""
    for fmt, field in (("yidu", "originalText"), ("jsonl", "text")):
        if field in record and "entities" in record:
            entities = record["entities"]
            if not isinstance(entities, list):
                return fmt  # the reader rejects it, naming the problem
            objects = [e for e in entities if isinstance(e, dict)]
            if all(_ENTITY_KEYS[fmt] <= set(e) for e in objects):
                return fmt
            return None
    if "text" in record or "originalText" in record:
        return "text"
    return None


def _keys(records: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({k for r in records for k in r}))


def _json_lines(file: Path, lines: list[str]) -> Detection:
    records = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    if not records:
        raise CorpusError(str(file), None, "starts like JSON lines ('{') but none of the first "
                                           f"{len(lines)} lines is a JSON object")
    kinds = {record_kind(r) for r in records}
    labeled = kinds & set(_REASONS)
    if len(labeled) > 1:
        raise CorpusError(str(file), None, "records of more than one format "
                                           f"({', '.join(sorted(labeled))}) in the first lines")
    if labeled:
        fmt = labeled.pop()
        return Detection(fmt, _REASONS[fmt], frozenset({fmt, "text"}))
    # no labeled record: no known text field at all, or entities that fit no labeled format
    if kinds == {None} or any("entities" in r for r in records):
        return Detection("text", f"JSON lines with keys {_keys(records)}: no text/entities of a "
                                 "labeled format (unlabeled text needs a text field or a column)",
                         frozenset({"text"}))
    has_text = any("text" in r for r in records)
    fits = {"text", "jsonl"} if has_text else {"text"}
    return Detection("text", f"JSON lines with keys {_keys(records)}: no entities",
                     frozenset(fits))


def _json_array(lines: list[str]) -> Detection:
    head = "\n".join(lines).lstrip()[1:].lstrip()
    what = ""
    try:
        first, _ = json.JSONDecoder().raw_decode(head)
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):
        kind = record_kind(first)
        what = f" of records with keys {_keys([first])}"
        if kind in _REASONS:
            what += f" ({kind} records, which its reader takes as JSON lines only)"
    return Detection("text", f"one JSON array{what}, not JSON lines", frozenset({"text"}))


def _plain(lines: list[str]) -> Detection:
    for sep, name in (("\t", "TSV"), (",", "CSV")):
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and min(counts) > 0 and (sep == "\t" or len(lines) > 1):
            return Detection("text", f"{name} text ({min(counts) + 1} columns)",
                             frozenset({"text"}))
    return Detection("text", "plain text lines", frozenset({"text"}))


# ----------------------------------------------------------------------------------------------
# Directories
# ----------------------------------------------------------------------------------------------


def detect_directory(root: Path) -> Detection:
    """The format of a directory: its layout (CCKS2017, BRAT), else its sampled files agree."""
    found = _ccks2017_layout(root)
    if found is not None:
        return found
    files = list(itertools.islice(walk_files(root), SCAN_FILES))
    if not files:
        raise CorpusError(str(root), None, "empty directory: nothing to read")
    names = set(files)
    if any(f.suffix == ".ann" and f.with_suffix(".txt") in names for f in files):
        return Detection("brat", "directory of BRAT standoff pairs (<name>.txt + <name>.ann)",
                         frozenset({"brat"}))
    return _sampled_files(root, files)


def _ccks2017_layout(root: Path) -> Detection | None:
    base = root / "train" if (root / "train").is_dir() else root
    dirs = [base] + sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    for directory in dirs[:1 + SCAN_FILES]:
        names = {e.name for e in itertools.islice(directory.iterdir(), SCAN_FILES)}
        for name in names:
            if name.endswith(ccks2017.TEXT_SUFFIX):
                stem = name[:-len(ccks2017.TEXT_SUFFIX)]
                if stem + ccks2017.ANN_SUFFIX in names:
                    where = "" if base == root else " (in train/)"
                    return Detection("ccks2017", "directory of <section>-<id>.txtoriginal.txt "
                                     f"texts with <section>-<id>.txt annotations{where}",
                                     frozenset({"ccks2017"}))
    return None


def _sampled_files(root: Path, files: list[Path]) -> Detection:
    seen: list[tuple[Path, Detection]] = []
    problems: list[str] = []
    for f in files:
        if len(seen) >= SAMPLE_FILES:
            break
        if f.suffix.lower() not in text.SUFFIXES or f.stat().st_size == 0:
            continue
        try:
            seen.append((f, detect_file(f)))
        except CorpusError as exc:
            problems.append(str(exc))
    if not seen:
        shown = "; ".join(problems[:3]) or "no .txt/.jsonl/.json/.csv/.tsv or extensionless file"
        raise CorpusError(str(root), None, f"no readable text file among the first "
                                           f"{len(files)} files: {shown}")
    fits = frozenset.intersection(*(d.fits for _, d in seen))
    formats = {d.format for _, d in seen}
    if len(formats) == 1:
        reasons = "; ".join(dict.fromkeys(d.reason for _, d in seen))
        return Detection(seen[0][1].format, f"directory of files with {reasons}", fits)
    listing = "; ".join(f"{f.relative_to(root)}: {d.format} ({d.reason})" for f, d in seen)
    if "text" in fits:
        return Detection("text", f"directory of mixed files ({listing})", fits)
    raise CorpusError(str(root), None, f"files of different formats: {listing}")
