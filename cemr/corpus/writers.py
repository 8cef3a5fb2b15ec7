"""Writers: cemr's JSON-lines exchange format and BRAT standoff.

Both stream (one document at a time) and are read back losslessly by the matching readers:
``read_documents("jsonl", p)`` gives the same ids, texts, spans and meta; ``read_documents("brat",
d)`` the same ids (through ``cemr_ids.jsonl`` where a file name had to differ from its id), texts
and spans (BRAT has no place for ``meta``). A BRAT directory opens in brat as it is: readable file
names, ``annotation.conf`` and ``visual.conf`` (:mod:`cemr.corpus.brat_names`). A document whose
span lies outside its text, or two documents with one id, raise ``ValueError`` naming the id: a
writer never produces a file its reader would reject.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cemr.outputs import atomic_open

from .brat_names import (ANNOTATION_CONF, ID_MAP, VISUAL_CONF, FileNamer, annotation_conf, id_map_lines,
                         storage_type, visual_conf)
from .document import Document
from .formats.brat import ann_safe


def _check_spans(doc: Document) -> None:
    for span in doc.spans:
        if span.end > len(doc.text):
            raise ValueError(f"document {doc.id!r}: span {span} ends beyond its text "
                             f"(length {len(doc.text)})")


def document_record(doc: Document) -> dict[str, Any]:
    """The JSON-lines record of one document (mentions included for human readers)."""
    _check_spans(doc)
    record: dict[str, Any] = {
        "id": doc.id,
        "text": doc.text,
        "entities": [{**s.to_dict(), "mention": doc.mention(s)} for s in doc.spans],
    }
    if doc.meta:
        record["meta"] = doc.meta
    return record


def write_jsonl(docs: Iterable[Document], path: str | os.PathLike) -> int:
    """Write ``docs`` as JSON lines (UTF-8, no BOM) to ``path``; returns the number written.

    The file appears complete or not at all (written beside it, then renamed).
    """
    seen: set[str] = set()
    n = 0
    with atomic_open(path, "w") as fh:
        for doc in docs:
            if doc.id in seen:
                raise ValueError(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)
            try:
                line = json.dumps(document_record(doc), ensure_ascii=False)
            except TypeError as exc:
                raise ValueError(f"document {doc.id!r}: meta is not JSON: {exc}") from exc
            fh.write(line + "\n")
            n += 1
    return n


def ann_lines(doc: Document) -> list[str]:
    """The BRAT ``T`` lines of one document: ``T<n>\tTYPE start end\tmention``, the type in the
    form brat stores (:func:`cemr.corpus.brat_names.storage_type`: ``DRUG`` as is, ``疾病和诊断``
    as ``xn--0tro21br7l2a047w``)."""
    _check_spans(doc)
    lines = []
    for n, span in enumerate(doc.spans, 1):
        try:
            stored = storage_type(span.type)
        except ValueError as exc:
            raise ValueError(f"document {doc.id!r}: {exc}") from None
        lines.append(f"T{n}\t{stored} {span.start} {span.end}\t{ann_safe(doc.mention(span))}")
    return lines


class BratWriter:
    """Writes documents one at a time as BRAT pairs under ``out_dir`` (created), named by
    :class:`cemr.corpus.brat_names.FileNamer`; :meth:`close` then writes what brat needs to open
    the directory: ``annotation.conf`` and ``visual.conf`` declaring ``types`` and every other type
    written (sorted after them), and ``cemr_ids.jsonl`` mapping each changed file name to its
    document id (a stale one is removed when no name changed). ``side_files=False`` leaves those
    to the caller (several writers filling one directory: ``cluster.batch_predict``)."""

    def __init__(self, out_dir: str | os.PathLike, types: Iterable[str] = (), *, side_files: bool = True):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.declared = list(dict.fromkeys(types))
        self.seen: set[str] = set()
        self.namer = FileNamer()
        self.side_files = side_files
        self.written = 0

    def write(self, doc: Document, extra_lines: Sequence[str] = ()) -> str:
        """Write ``doc`` (its ``.ann``: the ``T`` lines, then ``extra_lines``); returns its name
        relative to ``out_dir`` without ``.txt``/``.ann``. The text is written byte for byte
        (UTF-8, line ends untouched) so the offsets stay valid."""
        lines = ann_lines(doc)
        name = self.namer.name(doc.id)
        base = self.out / name
        base.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{base}.txt").write_text(doc.text, encoding="utf-8", newline="")
        Path(f"{base}.ann").write_text("".join(line + "\n" for line in [*lines, *extra_lines]),
                                       encoding="utf-8", newline="")
        self.seen.update(s.type for s in doc.spans)
        self.written += 1
        return name

    def types(self) -> list[str]:
        """The declared types, then every other type written, sorted."""
        return self.declared + sorted(self.seen - set(self.declared))

    def close(self) -> None:
        if self.side_files:
            write_brat_side_files(self.out, self.types(), self.namer.renamed)


def write_brat_side_files(out_dir: str | os.PathLike, types: Sequence[str],
                          renamed: Iterable[tuple[str, str]]) -> None:
    """``annotation.conf`` and ``visual.conf`` for ``types``, and ``cemr_ids.jsonl`` for the
    ``(file name, id)`` pairs of ``renamed`` (removed when there are none)."""
    out = Path(out_dir)
    (out / ANNOTATION_CONF).write_text(annotation_conf(types), encoding="utf-8")
    (out / VISUAL_CONF).write_text(visual_conf(types), encoding="utf-8")
    lines = list(id_map_lines(renamed))
    if lines:
        (out / ID_MAP).write_text("".join(lines), encoding="utf-8")
    else:
        (out / ID_MAP).unlink(missing_ok=True)


def write_brat(docs: Iterable[Document], out_dir: str | os.PathLike, types: Iterable[str] = ()) -> int:
    """Write each document as ``<name>.txt`` + ``<name>.ann`` under ``out_dir``, with
    ``annotation.conf``, ``visual.conf`` and, when a name differs from its id, ``cemr_ids.jsonl``
    (:class:`BratWriter`; names and types: :mod:`cemr.corpus.brat_names`); returns the count.
    ``types``: the entity types to declare first (a model's, say), besides those written.
    Existing files of the same names are overwritten."""
    writer = BratWriter(out_dir, types)
    for doc in docs:
        writer.write(doc)
    writer.close()
    return writer.written
