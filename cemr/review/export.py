"""Review tasks for annotation tools: Label Studio, doccano, BRAT.

Each :class:`cemr.review.select.ReviewItem` becomes one task holding its text, the model's
predictions as pre-annotations, and its provenance (``PROVENANCE_KEY``: the task id, the round,
the source row, the uncertainty...), which the tools keep and :mod:`cemr.review.imports` reads
back:

- Label Studio (:func:`write_labelstudio`): a JSON array of tasks in its import format,
  ``{"data": {"text": ..., "cemr": {...}}, "predictions": [{"model_version", "score",
  "result": [{"from_name": "label", "to_name": "text", "type": "labels", "value": {"start",
  "end", "text", "labels": [TYPE]}, "score"}]}]}``; offsets are characters, end exclusive. The
  project's labeling config is :func:`labelstudio_config` (a ``<Labels name="label">`` over
  ``<Text name="text">``). The prediction ``score`` is the model's confidence, so sorting the Data
  Manager by it puts the least sure first;
- doccano (:func:`write_doccano`): JSON lines ``{"text": ..., "label": [[start, end, TYPE]],
  "cemr": {...}}`` (sequence labeling; columns other than text and label are kept as metadata);
- BRAT (:func:`write_brat_tasks`): ``<name>.txt`` + ``<name>.ann`` per task, named from its id
  as :func:`cemr.corpus.writers.write_brat` names documents (the pre-annotations as ``T`` lines,
  their confidence as ``AnnotatorNotes``), ``annotation.conf`` and ``visual.conf`` (the entity
  types, shown by their names), ``cemr_ids.jsonl`` (task id of each file whose name differs from
  it) and ``review_manifest.jsonl`` (each task's provenance, one line per id).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from cemr.corpus.document import Document
from cemr.outputs import atomic_open

from .select import ReviewItem, Scored

EXPORT_FORMATS = ("labelstudio", "doccano", "brat")
PROVENANCE_KEY = "cemr"
FROM_NAME, TO_NAME = "label", "text"  # the names of the labeling config's Labels and Text tags
MANIFEST = "review_manifest.jsonl"
BRAT_CONF = "annotation.conf"


def provenance(item: ReviewItem, exported_from: str = "") -> dict[str, Any]:
    """What a task carries about itself: its id, uncertainty and the item's provenance."""
    out = {"task": item.id, "uncertainty": item.uncertainty, **item.provenance}
    if exported_from:
        out["exported_from"] = exported_from
    return out


def _predictions(item: ReviewItem) -> tuple[Scored, ...]:
    if item.predictions is None:
        raise ValueError(f"review item {item.id!r} has no predictions: attach them first "
                         "(cemr.review.select.attach_predictions)")
    return item.predictions


def entity_types(items: Iterable[ReviewItem], declared: Sequence[str] = ()) -> list[str]:
    """``declared`` then every other type the items' predictions use, sorted."""
    seen = {p.span.type for it in items for p in (it.predictions or ())}
    return list(declared) + sorted(seen - set(declared))


# ----------------------------------------------------------------------------------------------
# Label Studio
# ----------------------------------------------------------------------------------------------


def labelstudio_config(types: Sequence[str]) -> str:
    """The labeling config of a Label Studio NER project over these tasks."""
    labels = "".join(f"    <Label value={quoteattr(t)}/>\n" for t in types)
    return (f"<View>\n  <Labels name={quoteattr(FROM_NAME)} toName={quoteattr(TO_NAME)}>\n{labels}  </Labels>\n"
            f"  <Text name={quoteattr(TO_NAME)} value=\"$text\"/>\n</View>\n")


def labelstudio_task(item: ReviewItem, model_version: str, exported_from: str = "") -> dict[str, Any]:
    """One task of Label Studio's import format with the predictions as pre-annotations."""
    preds = _predictions(item)
    result = [{"id": f"p{k}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels",
               "value": {"start": p.span.start, "end": p.span.end, "text": item.text[p.span.start:p.span.end],
                         "labels": [p.span.type]},
               "score": round(p.confidence, 6)} for k, p in enumerate(preds)]
    score = None if item.uncertainty is None else round(1.0 - item.uncertainty, 6)
    return {"data": {"text": item.text, PROVENANCE_KEY: provenance(item, exported_from)},
            "predictions": [{"model_version": model_version, "score": score, "result": result}]}


def write_labelstudio(items: Sequence[ReviewItem], out: str | os.PathLike, model_version: str,
                      exported_from: str = "") -> int:
    """Write the tasks as one JSON array (UTF-8, atomic); returns the number of tasks."""
    tasks = [labelstudio_task(it, model_version, exported_from) for it in items]
    with atomic_open(out, "w") as fh:
        json.dump(tasks, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    return len(tasks)


# ----------------------------------------------------------------------------------------------
# doccano
# ----------------------------------------------------------------------------------------------


def doccano_record(item: ReviewItem, exported_from: str = "") -> dict[str, Any]:
    """One doccano sequence-labeling record with the predictions as labels."""
    labels = [[p.span.start, p.span.end, p.span.type] for p in _predictions(item)]
    return {"text": item.text, "label": labels, PROVENANCE_KEY: provenance(item, exported_from)}


def write_doccano(items: Sequence[ReviewItem], out: str | os.PathLike, exported_from: str = "") -> int:
    """Write the tasks as doccano JSON lines (atomic); returns the number of tasks."""
    with atomic_open(out, "w") as fh:
        for it in items:
            fh.write(json.dumps(doccano_record(it, exported_from), ensure_ascii=False) + "\n")
    return len(items)


# ----------------------------------------------------------------------------------------------
# BRAT
# ----------------------------------------------------------------------------------------------


def write_brat_tasks(items: Sequence[ReviewItem], out_dir: str | os.PathLike, types: Sequence[str],
                     exported_from: str = "") -> int:
    """Write the tasks into the (new or empty) directory ``out_dir`` as
    :func:`cemr.corpus.writers.write_brat` writes documents (file names from the task ids, names
    that had to change in ``cemr_ids.jsonl``; ``annotation.conf`` and ``visual.conf`` declaring
    ``types``), each ``.ann`` holding the ``T`` lines then one ``#`` AnnotatorNotes line per entity
    with its confidence, and ``review_manifest.jsonl``. Returns the number of tasks."""
    from cemr.corpus.writers import BratWriter

    writer = BratWriter(out_dir, types)
    for it in items:
        preds = _predictions(it)
        doc = Document(it.id, it.text, [p.span for p in preds])
        by_span = {p.span: p.confidence for p in preds}
        notes = [f"#{n}\tAnnotatorNotes T{n}\tcemr confidence {by_span[s]:.3f}" for n, s in enumerate(doc.spans, 1)]
        writer.write(doc, notes)  # the T lines are numbered in doc.spans order, as the notes
    writer.close()
    with open(Path(out_dir) / MANIFEST, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps({"id": it.id, PROVENANCE_KEY: provenance(it, exported_from)}, ensure_ascii=False)
                     + "\n")
    return len(items)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def label_config_path(out: str | os.PathLike) -> Path:
    """Where the Label Studio labeling config goes beside the tasks file ``out``."""
    p = Path(out)
    return p.with_name(p.stem + ".label_config.xml")


def export_review(out: str | os.PathLike, fmt: str, *, round_dir: str | os.PathLike | None = None,
                  predictions: str | os.PathLike | None = None, limit: int | None = 200,
                  threshold: float = 0.7, model: str | os.PathLike | None = None, device: str = "auto",
                  types: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """``cemr review export``: select (:mod:`cemr.review.select`) from a round directory or a
    ``cemr predict`` output, attach the model's predictions when the shards lack them (``model``),
    write the tasks in ``fmt``. Every output is checked before anything is read or written, and
    appears complete or not at all. Returns the summary (tasks, outputs, the selection's
    accounting)."""
    from cemr.corpus.document import CorpusError
    from cemr.outputs import OutputError, atomic_dir, atomic_write_text, check_output

    from .select import SelectionReport, select_from_predictions, select_from_round

    if fmt not in EXPORT_FORMATS:
        raise OutputError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if (round_dir is None) == (predictions is None):
        raise OutputError("give exactly one of --round-dir and --predictions")
    if limit is not None and limit < 1:
        raise OutputError(f"--limit {limit}: expected at least 1")
    if not 0 <= threshold <= 1:
        raise OutputError(f"--threshold {threshold}: expected a confidence in [0, 1]")
    source = str(round_dir if round_dir is not None else predictions)
    kind = "dir" if fmt == "brat" else "file"
    check_output(out, [source], overwrite=overwrite, kind=kind)
    if fmt == "labelstudio":
        check_output(label_config_path(out), [source], overwrite=overwrite)
    report = SelectionReport()
    if round_dir is not None:
        items = select_from_round(round_dir, limit, report)
        version = f"cemr round {items[0].round}" if items else "cemr"
    else:
        items = select_from_predictions(predictions, threshold, limit, report)
        version = "cemr predict"
    if not items:
        raise CorpusError(source, None, f"nothing to review: no row below the threshold ({report.to_dict()})")
    declared = list(types)
    if any(it.predictions is None for it in items) or (model is not None and not declared):
        if model is None:
            raise CorpusError(source, None, "these shards keep no predictions for below-threshold rows (no "
                                            "'predictions' column): pass --model with the model that pseudo-labeled "
                                            "this round (RUN_DIR/rounds/round_NNN/model of the round named in the "
                                            "bootstrap log, 'pseudo-labeled ... with round K's model')")
        from cemr.modeldir import check_model_dir
        from cemr.predictor import Predictor

        from .select import attach_predictions

        check_model_dir(model)
        predictor = Predictor.load(model, device)
        items = attach_predictions(items, predictor)
        declared = declared or list(predictor.labels.types)
        version = f"{version} ({Path(model).name})"
    all_types = entity_types(items, declared)
    written = {"tasks": str(out)}
    if fmt == "labelstudio":
        n = write_labelstudio(items, out, version, source)
        atomic_write_text(label_config_path(out), labelstudio_config(all_types))
        written["label_config"] = str(label_config_path(out))
    elif fmt == "doccano":
        n = write_doccano(items, out, source)
    else:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            n = write_brat_tasks(items, tmp, all_types, source)
    return {"tasks": n, "format": fmt, "out": written, "types": all_types, "model_version": version,
            "selection": report.to_dict()}
