"""Reviewed annotations back into cemr: Label Studio JSON export, doccano JSON lines, BRAT.

Every task is one record of a ``ReadReport``, validated by ``cemr.corpus.validate.RecordBuilder``
as every corpus reader's records are (offsets, mention, type, duplicates, overlaps; ``read ==
kept + rejected``, each problem with its file and task or line). The documents come out with
``meta["review"]``: the provenance the export put in the task (``PROVENANCE_KEY``: the task id,
round, source row, uncertainty), plus the file read, the tool's task id and the annotator.

- Label Studio (``labelstudio``): the JSON export (a JSON array of tasks, ``annotations[].result``
  with ``value.start``/``value.end``/``value.labels``; character offsets, end exclusive). A task
  without an annotation that is not cancelled is rejected with reason ``not_reviewed``; with
  several, the one updated last is used and the record counted as repaired (reason
  ``multiple_annotations``). Results that are not ``labels`` (relations, choices...) are counted
  as ``ignored_labelstudio_<type>``. Pre-annotations (``predictions``) are never read as gold;
- doccano (``doccano``): JSON lines with ``text`` and ``label`` (``[[start, end, TYPE]]``) or
  ``entities`` (``[{"start_offset", "end_offset", "label"}]``); other columns are metadata.
  doccano cannot tell a reviewed example from an unreviewed one: export only the approved ones;
- BRAT (``brat``): the directory, as the BRAT reader reads it, with ``review_manifest.jsonl``
  (written by the export) giving each document's provenance. As in doccano, every document is
  read as reviewed.

Documents get the id ``review:<task id>`` so they cannot collide with the training corpus.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cemr.corpus.document import CorpusError, Document, ReadReport
from cemr.corpus.formats._common import IdRegistry, int_field, iter_json_records, require_path, select_files
from cemr.corpus.validate import (BAD_ENTITY, BAD_RECORD, BAD_JSON, MISSING_FIELD, REPAIRED, RawSpan,
                                  RecordBuilder)

from .export import MANIFEST, PROVENANCE_KEY

IMPORT_FORMATS = ("labelstudio", "doccano", "brat")
NOT_REVIEWED = "not_reviewed"
NOT_REVIEWED_PROBLEM = "not reviewed (no annotation that is not cancelled); its predictions are not gold"
MULTIPLE_ANNOTATIONS = "multiple_annotations"
ID_PREFIX = "review:"


def gold_id(task_id: str) -> str:
    """The document id of a reviewed task."""
    return task_id if task_id.startswith(ID_PREFIX) else ID_PREFIX + task_id


def _exported(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------------------------
# Label Studio
# ----------------------------------------------------------------------------------------------


def _annotator(annotation: dict[str, Any]) -> Any:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or who.get("id")
    return who


def choose_annotation(annotations: Any) -> tuple[dict[str, Any] | None, int]:
    """``(the annotation to use, how many were not cancelled)``: the one updated (else created)
    last; ties and missing times fall to the later one in the list."""
    live = [a for a in annotations or () if isinstance(a, dict) and not a.get("was_cancelled")]
    if not live:
        return None, 0
    order = sorted(range(len(live)), key=lambda i: (str(live[i].get("updated_at") or live[i].get("created_at") or ""), i))
    return live[order[-1]], len(live)


def _labelstudio_spans(task_no: int, annotation: dict[str, Any], builder: RecordBuilder, report: ReadReport,
                       path: str) -> None:
    result = annotation.get("result")
    if not isinstance(result, list):
        builder.bad_span(f"task #{task_no}: annotation 'result' is not a list; dropped", BAD_ENTITY)
        return
    for j, r in enumerate(result, 1):
        where = f"task #{task_no} result #{j}"
        if not isinstance(r, dict):
            builder.bad_span(f"{where}: expected an object; dropped", BAD_ENTITY)
            continue
        if r.get("type") != "labels":
            report.reasons[f"ignored_labelstudio_{r.get('type')}"] += 1
            continue
        value = r.get("value") if isinstance(r.get("value"), dict) else {}
        start, end, labels = int_field(value.get("start")), int_field(value.get("end")), value.get("labels")
        mention = value.get("text") if isinstance(value.get("text"), str) else None
        if start is None or end is None or not isinstance(labels, list) or not labels \
                or not all(isinstance(t, str) for t in labels):
            builder.bad_span(f"{where}: expected integer value.start/value.end and a non-empty list of "
                             f"value.labels, got {value!r}; span dropped", BAD_ENTITY)
            continue
        for t in labels:
            builder.add_span(RawSpan(start, end, t, mention, path, None, f"{where} {t} [{start}, {end})"))


def read_labelstudio(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
                     types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """The reviewed tasks of a Label Studio JSON export (see the module docstring)."""
    file = require_path(path)
    if not file.is_file():
        raise CorpusError(str(file), None, "expected the JSON file of a Label Studio export (Export > JSON)")
    try:
        tasks = json.loads(file.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        RecordBuilder(report, path=str(file), strict=strict).reject(f"not a JSON file: {exc}", BAD_JSON)
        return
    if not isinstance(tasks, list):
        RecordBuilder(report, path=str(file), strict=strict).reject(
            "expected a JSON array of tasks (Label Studio's JSON export), got "
            f"{type(tasks).__name__}", BAD_RECORD)
        return
    ids = IdRegistry()
    for k, task in enumerate(tasks, 1):
        builder = RecordBuilder(report, path=str(file), strict=strict, overlap_policy=overlap_policy, types=types)
        doc = _labelstudio_task(file, k, task, builder, report, ids)
        if doc is not None:
            yield doc


def _labelstudio_task(file: Path, k: int, task: Any, builder: RecordBuilder, report: ReadReport,
                      ids: IdRegistry) -> Document | None:
    data = task.get("data") if isinstance(task, dict) else None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        builder.reject(f"task #{k}: no data.text (a Label Studio task of a text project is "
                       "{\"data\": {\"text\": ...}, \"annotations\": [...]})", MISSING_FIELD)
        return None
    annotation, live = choose_annotation(task.get("annotations"))
    if annotation is None:
        builder.reject(f"task #{k} (Label Studio id {task.get('id')}): {NOT_REVIEWED_PROBLEM}", NOT_REVIEWED)
        return None
    if live > 1:
        builder.changed = True
        report.note(str(file), None, f"task #{k} (Label Studio id {task.get('id')}): {live} annotations; the "
                    f"one updated last (id {annotation.get('id')}) is used", REPAIRED, MULTIPLE_ANNOTATIONS)
    _labelstudio_spans(k, annotation, builder, report, str(file))
    exported = _exported(data.get(PROVENANCE_KEY))
    task_id = str(exported.get("task") or f"labelstudio:{task.get('id', k)}")
    doc_id = gold_id(task_id)
    source = f"{file} task #{k}"
    if not ids.claim(doc_id, source, builder):
        return None
    review = {**exported, "format": "labelstudio", "file": str(file), "task_index": k,
              "labelstudio_task_id": task.get("id"), "annotation_id": annotation.get("id"),
              "annotator": _annotator(annotation), "updated_at": annotation.get("updated_at"),
              "annotations": live}
    return builder.build(doc_id, text, source=source, meta={"review": review})


# ----------------------------------------------------------------------------------------------
# doccano
# ----------------------------------------------------------------------------------------------


def _doccano_labels(record: dict[str, Any]) -> list[tuple[Any, Any, Any]] | None:
    """``(start, end, type)`` of each label as written, or None when the record has no labels field."""
    if "label" in record or "labels" in record:
        labels = record.get("label", record.get("labels"))
        if not isinstance(labels, list):
            return [(None, None, labels)]
        return [tuple(x) if isinstance(x, (list, tuple)) and len(x) == 3 else (None, None, x) for x in labels]
    if "entities" in record:
        ents = record["entities"] if isinstance(record["entities"], list) else [record["entities"]]
        return [(e.get("start_offset"), e.get("end_offset"), e.get("label")) if isinstance(e, dict)
                else (None, None, e) for e in ents]
    return None


def read_doccano(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
                 types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """The examples of a doccano sequence-labeling JSON-lines export (file or directory of ``.jsonl``)."""
    root = require_path(path)
    ids = IdRegistry()
    for file, _ in select_files(root, lambda f: f.suffix in (".jsonl", ".json"), report, "doccano JSON-lines"):
        for number, builder, record in iter_json_records(file, report, strict=strict,
                                                         overlap_policy=overlap_policy, types=types):
            doc = _doccano_record(file, number, record, builder, ids)
            if doc is not None:
                yield doc


def _doccano_record(file: Path, number: int, record: dict[str, Any], builder: RecordBuilder,
                    ids: IdRegistry) -> Document | None:
    text = record.get("text", record.get("data"))
    labels = _doccano_labels(record)
    if not isinstance(text, str) or labels is None:
        builder.reject(f"not a doccano sequence-labeling record: expected 'text' and 'label' ([[start, end, "
                       f"TYPE], ...]) or 'entities' (keys: {', '.join(sorted(record))})", MISSING_FIELD)
        return None
    for j, (start, end, type_) in enumerate(labels, 1):
        s, e = int_field(start), int_field(end)
        if s is None or e is None or not isinstance(type_, str):
            builder.bad_span(f"label #{j}: expected [start, end, TYPE], got {[start, end, type_]!r}; span dropped",
                             BAD_ENTITY)
            continue
        builder.add_span(RawSpan(s, e, type_, None, str(file), number, f"label #{j} {type_} [{s}, {e})"))
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    exported = _exported(record.get(PROVENANCE_KEY) or meta.get(PROVENANCE_KEY))
    task_id = str(exported.get("task") or f"doccano:{record.get('id', f'{file.stem}:{number}')}")
    doc_id = gold_id(task_id)
    source = f"{file}:{number}"
    if not ids.claim(doc_id, source, builder):
        return None
    review = {**exported, "format": "doccano", "file": str(file), "line": number, "doccano_id": record.get("id")}
    if "user" in record or "annotator" in record:
        review["annotator"] = record.get("user", record.get("annotator"))
    return builder.build(doc_id, text, source=source, meta={"review": review})


# ----------------------------------------------------------------------------------------------
# BRAT
# ----------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """``{task id: provenance}`` of a BRAT export's ``review_manifest.jsonl`` ({} when absent);
    a line that does not parse raises ``CorpusError`` (file, line)."""
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = _exported(row.get(PROVENANCE_KEY))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorpusError(str(path), number, f"bad manifest line ({exc}); it was written by cemr review "
                                                 "export: restore it, or remove it to import without provenance")
    return out


def read_brat_review(path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
                     types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """The documents of a reviewed BRAT directory with the manifest's provenance."""
    from cemr.corpus.formats import brat

    root = require_path(path)
    manifest = read_manifest(root / MANIFEST) if root.is_dir() else {}
    for doc in brat.read(root, report=report, overlap_policy=overlap_policy, types=types, strict=strict):
        exported = manifest.get(doc.id, {})
        review = {**exported, "format": "brat", "file": doc.source, "in_manifest": doc.id in manifest}
        yield Document(gold_id(str(exported.get("task") or doc.id)), doc.text, doc.spans, doc.source,
                       {"review": review})


READERS = {"labelstudio": read_labelstudio, "doccano": read_doccano, "brat": read_brat_review}


def read_reviewed(fmt: str, path: str | Path, *, report: ReadReport, overlap_policy: str = "keep_longest",
                  types: set[str] | None = None, strict: bool = False) -> Iterator[Document]:
    """The reviewed documents of ``path`` in ``fmt`` (one of ``IMPORT_FORMATS``)."""
    if fmt not in READERS:
        raise ValueError(f"unknown review format {fmt!r}; known: {', '.join(IMPORT_FORMATS)}")
    return READERS[fmt](path, report=report, overlap_policy=overlap_policy, types=types, strict=strict)


def policy_view(report: ReadReport) -> ReadReport:
    """The report the rejection policy judges: tasks not reviewed yet are left out (they are not
    bad data, only work not done), every other rejection counts."""
    n = report.reasons.get(NOT_REVIEWED, 0)
    view = ReadReport(read=report.read - n, kept=report.kept, rejected=report.rejected - n,
                      repaired=report.repaired, reasons=report.reasons.copy(),
                      issues=[i for i in report.issues if NOT_REVIEWED_PROBLEM not in i.problem], noted=report.noted - n)
    view.reasons.pop(NOT_REVIEWED, None)
    return view


def import_reviewed(fmt: str, path: str | os.PathLike, out: str | os.PathLike, *, types: set[str] | None = None,
                    overlap_policy: str = "keep_longest", max_rejected: float = 0.0,
                    strict: bool = False) -> dict[str, Any]:
    """Read the reviewed annotations and write them as cemr JSON lines (``meta["review"]`` the
    provenance). Rejected records beyond ``max_rejected`` (any with ``strict``; tasks not reviewed
    do not count) or no reviewed task at all raise ``CorpusError`` before anything is written.
    Returns the summary: documents written, entities per type, the reader's accounting."""
    from cemr.corpus.policy import check_rejections
    from cemr.corpus.writers import write_jsonl

    report = ReadReport()
    docs = list(read_reviewed(fmt, path, report=report, overlap_policy=overlap_policy, types=types))
    check_rejections(policy_view(report), str(path), max_rejected=max_rejected, strict=strict)
    if not docs:
        raise CorpusError(str(path), None, f"no reviewed task to import ({report.read} record(s) read, "
                                           f"{report.rejected} rejected: {dict(report.reasons)})")
    n = write_jsonl(docs, out)
    entities: dict[str, int] = {}
    for d in docs:
        for t, c in d.type_counts().items():
            entities[t] = entities.get(t, 0) + c
    return {"documents": n, "out": str(out), "format": fmt, "entities": dict(sorted(entities.items())),
            "not_reviewed": report.reasons.get(NOT_REVIEWED, 0), "data": report.to_dict(max_issues=50)}
