"""CCKS 2019 Yidu-S4K task 1: JSON lines.

One record per line: ``{"originalText": "...", "entities": [{"label_type": T, "start_pos": s,
"end_pos": e, "overlap": 0}, ...]}``, 0-based, end EXCLUSIVE (the ``overlap`` flag is ignored:
overlaps are found from the offsets). The first training file starts with a UTF-8 BOM. ``path``
is one file or a directory of ``*.txt`` / ``*.jsonl`` files (recursive, sorted). Document id:
``<filename-stem>:<line>``.

A record with other keys than ``originalText`` and ``entities`` is rejected (reason
``unknown_keys``, naming them), never read as if the unknown part were absent; keys of the entity
objects other than ``label_type``, ``start_pos``, ``end_pos`` (such as ``overlap``) are ignored. A
file holding one JSON array instead of JSON lines is one rejected record (reason ``json_array``).

The shared training part is clean: 1,000 records, 17,653 entities, no overlap, duplicate or offset
out of range, so every entity is kept.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..document import Document, ReadReport
from ..validate import BAD_ENTITY, BAD_RECORD, MISSING_FIELD, RawSpan
from ._common import (IdRegistry, int_field, iter_json_records, reject_unknown_keys, require_path,
                      select_files)

SUFFIXES = (".txt", ".jsonl")
RECORD_KEYS = frozenset({"originalText", "entities"})
ENTITY_KEYS = frozenset({"label_type", "start_pos", "end_pos"})


def parse_entity(entity: object) -> tuple[int, int, str]:
    """``(start, end, type)`` of one entity object; ``ValueError`` naming the bad field."""
    if not isinstance(entity, dict):
        raise ValueError(f"expected an object, got {type(entity).__name__}")
    start, end = int_field(entity.get("start_pos")), int_field(entity.get("end_pos"))
    type_ = entity.get("label_type")
    if start is None or end is None:
        raise ValueError(f"start_pos/end_pos must be integers, got {entity.get('start_pos')!r}, "
                         f"{entity.get('end_pos')!r}")
    if not isinstance(type_, str):
        raise ValueError(f"label_type must be a string, got {type_!r}")
    return start, end, type_


def read(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
         types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """Stream the records of a Yidu-S4K file or directory (see the module docstring)."""
    root = require_path(path)
    ids = IdRegistry()
    for file, _ in select_files(root, lambda f: f.suffix in SUFFIXES, report, "Yidu-S4K"):
        for number, builder, record in iter_json_records(
                file, report, strict=strict, overlap_policy=overlap_policy, types=types):
            if reject_unknown_keys(record, RECORD_KEYS, "Yidu-S4K", builder):
                continue
            text = record.get("originalText")
            if not isinstance(text, str):
                builder.reject(f"missing or non-string 'originalText' (keys: "
                               f"{', '.join(sorted(record))})", MISSING_FIELD)
                continue
            entities = record.get("entities", None)
            if not isinstance(entities, list):
                builder.reject(f"'entities' must be a list, got {type(entities).__name__}",
                               MISSING_FIELD if entities is None else BAD_RECORD)
                continue
            for k, entity in enumerate(entities, 1):
                try:
                    start, end, type_ = parse_entity(entity)
                except ValueError as exc:
                    builder.bad_span(f"entity #{k}: {exc}; span dropped", BAD_ENTITY)
                    continue
                builder.add_span(RawSpan(start, end, type_, None, str(file), number,
                                         f"entity #{k} {type_} [{start}, {end})"))
            doc_id = f"{file.stem}:{number}"
            source = f"{file}:{number}"
            if not ids.claim(doc_id, source, builder):
                continue
            doc = builder.build(doc_id, text, source=source)
            if doc is not None:
                yield doc
