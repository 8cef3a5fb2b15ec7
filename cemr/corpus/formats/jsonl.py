"""cemr's exchange format: generic JSON lines (written by ``cemr.corpus.writers.write_jsonl``).

One record per line: ``{"id": "...", "text": "...", "entities": [{"start": s, "end": e,
"type": T, "mention": "..."}], "meta": {...}}``; 0-based, end EXCLUSIVE. ``mention`` is optional
and checked against ``text[start:end]`` when present; ``entities`` and ``meta`` are optional.
A missing ``id`` becomes ``<filename-stem>:<line>``; a repeated id is rejected. ``path`` is one
file or a directory of ``*.jsonl`` files (recursive, sorted).

A record with keys other than ``id``, ``text``, ``entities`` and ``meta`` is rejected (reason
``unknown_keys``, naming them and the expected ones): ``"spans"`` instead of ``"entities"`` must not
become a document without entities (put extra data under ``meta``). Entity objects may carry more
keys (``confidence`` in ``cemr predict`` output, say); those are ignored. A file holding one JSON
array instead of JSON lines is one rejected record (reason ``json_array``).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..document import Document, ReadReport
from ..validate import BAD_ENTITY, BAD_RECORD, MISSING_FIELD, RawSpan, RecordBuilder
from ._common import (IdRegistry, int_field, iter_json_records, reject_unknown_keys, require_path,
                      select_files)

SUFFIXES = (".jsonl",)
RECORD_KEYS = frozenset({"id", "text", "entities", "meta"})
ENTITY_KEYS = frozenset({"start", "end", "type"})


def parse_entity(entity: object) -> tuple[int, int, str, str | None]:
    """``(start, end, type, mention)`` of one entity object; ``ValueError`` naming the field."""
    if not isinstance(entity, dict):
        raise ValueError(f"expected an object, got {type(entity).__name__}")
    start, end = int_field(entity.get("start")), int_field(entity.get("end"))
    if start is None or end is None:
        raise ValueError(f"start/end must be integers, got {entity.get('start')!r}, "
                         f"{entity.get('end')!r}")
    type_ = entity.get("type")
    if not isinstance(type_, str):
        raise ValueError(f"type must be a string, got {type_!r}")
    mention = entity.get("mention")
    if mention is not None and not isinstance(mention, str):
        raise ValueError(f"mention must be a string, got {mention!r}")
    return start, end, type_, mention


def _record_id(record: dict, default: str) -> str | None:
    value = record.get("id", default)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return str(value)


def read(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
         types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """Stream the records of a JSON-lines file or directory (see the module docstring)."""
    root = require_path(path)
    ids = IdRegistry()
    for file, _ in select_files(root, lambda f: f.suffix in SUFFIXES, report, "JSON-lines"):
        for number, builder, record in iter_json_records(
                file, report, strict=strict, overlap_policy=overlap_policy, types=types):
            doc = _build(record, file, number, builder, ids)
            if doc is not None:
                yield doc


def _build(record: dict, file: Path, number: int, builder: RecordBuilder,
           ids: IdRegistry) -> Document | None:
    if reject_unknown_keys(record, RECORD_KEYS, "JSON-lines", builder):
        return None
    text = record.get("text")
    if not isinstance(text, str):
        builder.reject(f"missing or non-string 'text' (keys: {', '.join(sorted(record))})",
                       MISSING_FIELD)
        return None
    doc_id = _record_id(record, f"{file.stem}:{number}")
    if doc_id is None:
        builder.reject(f"'id' must be a non-empty string or integer, got {record.get('id')!r}",
                       BAD_RECORD)
        return None
    entities = record.get("entities", [])
    meta = record.get("meta", {})
    if not isinstance(entities, list) or not isinstance(meta, dict):
        builder.reject("'entities' must be a list and 'meta' an object", BAD_RECORD)
        return None
    for k, entity in enumerate(entities, 1):
        try:
            start, end, type_, mention = parse_entity(entity)
        except ValueError as exc:
            builder.bad_span(f"entity #{k}: {exc}; span dropped", BAD_ENTITY)
            continue
        builder.add_span(RawSpan(start, end, type_, mention, str(file), number,
                                 f"entity #{k} {type_} [{start}, {end})"))
    source = f"{file}:{number}"
    if not ids.claim(doc_id, source, builder):
        return None
    return builder.build(doc_id, text, source=source, meta=meta)
