"""Writers: cemr's JSON-lines exchange format and BRAT standoff.

Both stream (one document at a time) and are read back losslessly by the matching readers:
``read_documents("jsonl", p)`` gives the same ids, texts, spans and meta; ``read_documents("brat",
d)`` the same ids, texts and spans (BRAT has no place for ``meta``). A document whose span lies
outside its text, or two documents with one id, raise ``ValueError`` naming the id: a writer never
produces a file its reader would reject.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cemr.outputs import atomic_open

from .document import Document
from .formats.brat import ann_safe, quote_id


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
    """The BRAT ``T`` lines of one document: ``T<n>\\tTYPE start end\\tmention``."""
    _check_spans(doc)
    lines = []
    for n, span in enumerate(doc.spans, 1):
        if not span.type or any(c.isspace() for c in span.type):
            raise ValueError(f"document {doc.id!r}: entity type {span.type!r} cannot be "
                             f"written to BRAT (empty or containing whitespace)")
        lines.append(f"T{n}\t{span.type} {span.start} {span.end}\t{ann_safe(doc.mention(span))}")
    return lines


def write_brat(docs: Iterable[Document], out_dir: str | os.PathLike) -> int:
    """Write each document as ``<id>.txt`` + ``<id>.ann`` under ``out_dir``; returns the count.

    Ids are made file-name safe reversibly (``quote_id``: ``part1:3`` -> ``part1%3A3``); the
    reader decodes them. The text is written byte for byte (UTF-8, line ends untouched) so the
    offsets stay valid. Existing files of the same names are overwritten.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    n = 0
    for doc in docs:
        name = quote_id(doc.id)
        folded = name.casefold()  # case-insensitive file systems
        if folded in names:
            raise ValueError(f"document ids {names[folded]!r} and {doc.id!r} map to one BRAT "
                             f"file name {name!r}")
        names[folded] = doc.id
        lines = ann_lines(doc)
        (out / f"{name}.txt").write_text(doc.text, encoding="utf-8", newline="")
        (out / f"{name}.ann").write_text("".join(line + "\n" for line in lines),
                                         encoding="utf-8", newline="")
        n += 1
    return n
