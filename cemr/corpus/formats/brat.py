"""BRAT standoff: a directory of ``<name>.txt`` (the text) + ``<name>.ann`` (its annotations).

Only text-bound annotations are entities: ``T1<TAB>TYPE start end<TAB>mention`` (0-based, end
exclusive, character offsets). A discontinuous span (``TYPE 0 3;5 8``) cannot be one ``Span``: it
is dropped with reason ``discontinuous``. Other lines (attributes ``A``, relations ``R``, events
``E``, notes ``#``, normalisations ``N``, equivalences ``*``, modifiers ``M``) are ignored and
counted in ``report.reasons`` as ``ignored_brat_<letter>``. The mention is checked against the
text with line breaks and tabs read as spaces (a ``.ann`` line cannot hold a line break).

``path`` is the directory (recursive, sorted). Document id: what ``cemr_ids.jsonl`` at its top
says for the file (``write_brat`` records there every file name that differs from its id), else
the relative path without ``.txt``, percent-decoded (``unquote_id``: how older cemr versions named
files), so ids written by ``write_brat`` come back unchanged. A type written as ``xn--`` +
Punycode (how ``write_brat`` stores a type brat cannot: ``疾病和诊断``) is read as the type it
encodes (:func:`cemr.corpus.brat_names.original_type`).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..brat_names import original_type, read_id_map
from ..document import CorpusError, Document, ReadReport
from ..validate import (BAD_LINE, DISCONTINUOUS, IGNORED, IGNORED_FILE,
                        MISSING_FILE, RawSpan, RecordBuilder)
from ._common import annotation_encoding, annotation_lines, read_whole_text, relpath, require_path, walk_files

IGNORED_KINDS = "AREN#*M"
_SAFE_PUNCT = "-_."


def quote_id(doc_id: str) -> str:
    """A file-name-safe, reversible form of ``doc_id``: letters and digits of any script and
    ``-_.`` stay, every other character becomes ``%XX`` per UTF-8 byte (a leading ``.`` too).

    >>> quote_id("part1:3")
    'part1%3A3'
    """
    if not doc_id:
        raise ValueError("empty document id")
    out = []
    for i, ch in enumerate(doc_id):
        if (ch.isalnum() or ch in _SAFE_PUNCT) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def unquote_id(name: str) -> str:
    """Inverse of ``quote_id`` (malformed ``%`` sequences are kept as written)."""
    if "%" not in name:
        return name
    out = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%" and _is_hex(name[i + 1:i + 3]):
            out.append(int(name[i + 1:i + 3], 16))
            i += 3
        else:
            out.extend(ch.encode("utf-8"))
            i += 1
    return out.decode("utf-8", errors="surrogateescape")


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def ann_safe(text: str) -> str:
    """``text`` with line breaks and tabs as spaces: how a mention is written on one line."""
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def parse_t_line(line: str) -> tuple[str, int, int, str]:
    """``(type, start, end, mention)`` of a ``T`` line; ``ValueError`` (message starting with
    ``discontinuous``) for fragments, or naming the problem when it does not parse."""
    parts = line.split("\t", 2)
    if len(parts) < 2:
        raise ValueError("expected 'T<n><TAB>TYPE start end<TAB>mention'")
    info = parts[1]
    mention = parts[2] if len(parts) == 3 else ""
    head = info.split(" ", 1)
    if len(head) != 2 or not head[0]:
        raise ValueError(f"expected 'TYPE start end', got {info!r}")
    type_, offsets = head
    if ";" in offsets:
        raise ValueError(f"discontinuous span {offsets!r} cannot be one entity")
    pieces = offsets.split()
    if len(pieces) != 2:
        raise ValueError(f"expected two offsets, got {offsets!r}")
    try:
        start, end = int(pieces[0]), int(pieces[1])
    except ValueError:
        raise ValueError(f"offsets {offsets!r} are not integers") from None
    return type_, start, end, mention


def iter_pairs(root: Path, report: ReadReport) -> Iterator[tuple[str, Path | None, Path | None]]:
    """``(relative stem, txt, ann)`` for every document under ``root``; a missing half is None.

    Sorted by relative path; other files are noted as ignored.
    """
    pending: dict[str, dict[str, Path]] = {}
    order: list[str] = []
    for f in walk_files(root):
        if f.suffix in (".txt", ".ann"):
            stem = relpath(f.with_suffix(""), root)
            if stem not in pending:
                pending[stem] = {}
                order.append(stem)
            pending[stem][f.suffix] = f
        else:
            report.note(str(f), None, "not a BRAT .txt/.ann file; ignored", IGNORED,
                        IGNORED_FILE)
    if not order:
        raise CorpusError(str(root), None, "no BRAT files (*.txt + *.ann) found")
    for stem in sorted(order):
        pair = pending.pop(stem)
        yield stem, pair.get(".txt"), pair.get(".ann")


def _add_annotations(ann: Path, builder: RecordBuilder, report: ReadReport) -> bool:
    encoding = annotation_encoding(ann, builder, report)
    if encoding is None:
        return False
    for number, line in annotation_lines(ann, encoding, builder):
        kind = line[0]
        if kind != "T":
            if kind in IGNORED_KINDS:
                report.reasons[f"ignored_brat_{kind}"] += 1
            else:
                builder.bad_span(f"line {line!r} is not a BRAT annotation; dropped", BAD_LINE,
                                 path=str(ann), line=number)
            continue
        try:
            type_, start, end, mention = parse_t_line(line)
        except ValueError as exc:
            reason = DISCONTINUOUS if str(exc).startswith("discontinuous") else BAD_LINE
            builder.bad_span(f"annotation {line!r}: {exc}; span dropped", reason,
                             path=str(ann), line=number)
            continue
        builder.add_span(RawSpan(start, end, original_type(type_), mention, str(ann), number, line))
    return True


def read(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
         types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """Stream the documents of a BRAT directory (see the module docstring)."""
    root = require_path(path)
    if not root.is_dir():
        raise CorpusError(str(root), None, "BRAT expects a directory of .txt + .ann files")
    id_map = read_id_map(root)
    for stem, txt, ann in iter_pairs(root, report):
        where = txt or ann
        assert where is not None
        builder = RecordBuilder(report, path=str(where), strict=strict,
                                overlap_policy=overlap_policy, types=types, normalise=ann_safe)
        if txt is None or ann is None:
            missing = where.with_suffix(".ann" if ann is None else ".txt").name
            builder.reject(f"document {stem!r} has no {missing}", MISSING_FILE)
            continue
        text = read_whole_text(txt, report, builder)
        if text is None or not _add_annotations(ann, builder, report):
            continue
        doc = builder.build(id_map.get(stem) or unquote_id(stem), text, source=str(txt))
        if doc is not None:
            yield doc
