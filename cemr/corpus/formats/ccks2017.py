"""CCKS 2017 clinical NER (JiMuYun EMRs).

Layout: ``<root>/<section>/<section>-<id>.txtoriginal.txt`` (the raw text of one EMR section)
beside ``<section>-<id>.txt`` (its annotations, one per line:
``mention<TAB>start<TAB>end<TAB>type``, 0-based, END INCLUSIVE, CRLF). ``path`` is the ``train`` directory, the dataset directory holding
``train/``, or one section directory. Document id: ``<section>-<id>``; ``meta`` holds
``section`` and ``record`` (the EMR number shared by the sections of one record, for splits).

The shared copy of the training set is clean: 958 texts, 24,783 annotations, no offset out of
range, no mention that differs from ``text[start:end+1]``, no duplicate, no overlapping or nested
span. So the published totals come out with every annotation kept; any problem in other copies is
handled by ``cemr.corpus.validate`` (counted, never silent).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..document import CorpusError, Document, ReadReport
from ..validate import (BAD_LINE, IGNORED, IGNORED_FILE, MISSING_FILE, RawSpan,
                        RecordBuilder)
from ._common import annotation_encoding, annotation_lines, read_whole_text, require_path

TEXT_SUFFIX = ".txtoriginal.txt"
ANN_SUFFIX = ".txt"
_NAME = re.compile(r"^(?P<section>.+)-(?P<record>\d+)$")


def resolve_root(path: str | Path) -> Path:
    """The directory holding the section directories: ``path/train`` when it exists."""
    p = require_path(path)
    if not p.is_dir():
        raise CorpusError(str(p), None, "CCKS2017 expects a directory (train/ or its parent)")
    return p / "train" if (p / "train").is_dir() else p


def _sort_key(stem: str) -> tuple[str, int, str]:
    m = _NAME.match(stem)
    if m:
        return m["section"], int(m["record"]), stem
    return stem, -1, stem


def iter_pairs(root: Path, report: ReadReport) -> Iterator[tuple[str, Path | None, Path | None]]:
    """``(doc_id, text_file, ann_file)`` for every document under ``root`` (files directly in it
    and in its sub-directories), sorted by section then numeric id; a missing half is None.
    Other files are noted as ignored."""
    dirs = [root] + sorted((d for d in root.iterdir() if d.is_dir()
                            and not d.name.startswith(".")), key=lambda d: d.name)
    found = False
    for directory in dirs:
        texts: dict[str, Path] = {}
        anns: dict[str, Path] = {}
        for f in sorted(directory.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.name.endswith(TEXT_SUFFIX):
                texts[f.name[: -len(TEXT_SUFFIX)]] = f
            elif f.name.endswith(ANN_SUFFIX):
                anns[f.name[: -len(ANN_SUFFIX)]] = f
            else:
                report.note(str(f), None, "not a CCKS2017 text/annotation file; ignored",
                            IGNORED, IGNORED_FILE)
        for stem in sorted(set(texts) | set(anns), key=_sort_key):
            found = True
            yield stem, texts.get(stem), anns.get(stem)
    if not found:
        raise CorpusError(str(root), None,
                          f"no CCKS2017 files (*{TEXT_SUFFIX} + *{ANN_SUFFIX}) found")


def parse_line(line: str) -> tuple[str, int, int, str]:
    """``(mention, start, end_exclusive, type)`` from ``mention\\tstart\\tend\\ttype`` (end
    inclusive on disk). ``ValueError`` with the reason when the line does not parse."""
    parts = line.rsplit("\t", 3)
    if len(parts) != 4:
        raise ValueError(f"expected 4 tab-separated fields (mention, start, end, type), "
                         f"got {len(parts)}")
    mention, start, end, type_ = parts
    try:
        s, e = int(start), int(end)
    except ValueError:
        raise ValueError(f"offsets {start!r}, {end!r} are not integers") from None
    return mention, s, e + 1, type_.strip()


def _add_annotations(ann: Path, builder: RecordBuilder, report: ReadReport) -> bool:
    """Feed the annotations of ``ann`` to ``builder``; False after rejecting the record."""
    encoding = annotation_encoding(ann, builder, report)
    if encoding is None:
        return False
    for number, line in annotation_lines(ann, encoding, builder):
        try:
            mention, start, end, type_ = parse_line(line)
        except ValueError as exc:
            builder.bad_span(f"annotation {line!r}: {exc}; span dropped", BAD_LINE,
                             path=str(ann), line=number)
            continue
        builder.add_span(RawSpan(start, end, type_, mention, str(ann), number, line))
    return True


def read(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
         types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """Stream the documents of a CCKS2017 directory (see the module docstring)."""
    root = resolve_root(path)
    for stem, text_file, ann_file in iter_pairs(root, report):
        where = text_file or ann_file
        assert where is not None
        builder = RecordBuilder(report, path=str(where), strict=strict,
                                overlap_policy=overlap_policy, types=types)
        if text_file is None or ann_file is None:
            missing = (where.parent / (stem + TEXT_SUFFIX) if text_file is None
                       else where.parent / (stem + ANN_SUFFIX))
            builder.reject(f"document {stem!r} has no {missing.name}", MISSING_FILE)
            continue
        text = read_whole_text(text_file, report, builder)
        if text is None:
            continue
        if not _add_annotations(ann_file, builder, report):
            continue
        m = _NAME.match(stem)
        meta = {"section": m["section"], "record": m["record"]} if m else {}
        doc = builder.build(stem, text, source=str(text_file), meta=meta)
        if doc is not None:
            yield doc
