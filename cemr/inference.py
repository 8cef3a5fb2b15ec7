"""Tagging and scoring raw documents from files: what ``cemr predict`` and ``cemr evaluate`` run.

Inputs are checked before anything is written:

- ``-`` reads standard input (plain text, or a labeled format's JSON lines) and, as ``--out``,
  writes JSON lines to standard output;
- the output must not resolve to an input (nor lie inside an input directory), and an existing
  output is replaced only with ``overwrite`` (:func:`cemr.outputs.check_output`);
- every input is read once for its document ids first: two documents with one id (``d1/note.txt``
  and ``d2/note.txt`` both give ``note.txt:1``) stop the run before the model is loaded or any
  output exists;
- the input format is detected from the data (``auto``) or checked against it, and an input from
  which no document could be read is an error, never "0 documents".

Outputs appear complete or not at all (JSON lines and HTML through :func:`cemr.outputs.atomic_open`, BRAT
directories through :func:`cemr.outputs.atomic_dir`); standard output instead gets each document's line as
soon as it is tagged. A progress bar on stderr counts the characters tagged (:mod:`cemr.progress`). Every
input record is accounted for in the summary: read, kept, rejected (with reasons), per input.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cemr.corpus.document import CorpusError, Document, ReadReport
from cemr.outputs import STDIO, OutputError, atomic_dir, atomic_open, check_output
from cemr.progress import progress, say, write

Log = Callable[[str], None]

OUT_FORMATS = ("jsonl", "brat", "html")
STDIN_NAME = "stdin"


@contextlib.contextmanager
def stdin_as_file(inputs: Sequence[str], stdin: Any = None) -> Iterator[list[str]]:
    """``inputs`` with ``-`` replaced by a temporary file holding standard input (named
    ``stdin``, so its documents are ``stdin:LINE``); other paths unchanged. ``-`` at most once."""
    if list(inputs).count(STDIO) > 1:
        raise OutputError("'-' (standard input) given more than once")
    if STDIO not in inputs:
        yield list(inputs)
        return
    tmp = Path(tempfile.mkdtemp(prefix="cemr-stdin-"))
    try:
        path = tmp / STDIN_NAME
        src = stdin if stdin is not None else sys.stdin.buffer
        with open(path, "wb") as fh:
            shutil.copyfileobj(src, fh)
        yield [str(path) if p == STDIO else p for p in inputs]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class InputSource:
    """One input path, the format it is read in, and its reader's accounting."""

    path: str  # as the user gave it ('-' for standard input)
    read_path: str  # the file read (a temporary copy for standard input)
    format: str
    detected: str = ""  # what detection said (empty for an explicit format that fits)
    report: ReadReport = field(default_factory=ReadReport)

    def documents(self, column: str | None = None, report: ReadReport | None = None) -> Iterator[Document]:
        from cemr.corpus.readers import read_documents, read_unlabeled

        rep = report if report is not None else self.report
        if self.format == "text":
            return read_unlabeled(self.read_path, column=column, report=rep)
        return read_documents(self.format, self.read_path, report=rep)

    def summary(self) -> dict[str, Any]:
        out = {"format": self.format, **self.report.to_dict()}
        if self.detected:
            out["detected"] = self.detected
        return out


def resolve_sources(inputs: Sequence[str], read_paths: Sequence[str], fmt: str, *, labeled: bool,
                    log: Log = say) -> list[InputSource]:
    """One :class:`InputSource` per input: ``fmt`` (``auto`` detects per input, printing what it
    found; an explicit format is checked against the data)."""
    from cemr.corpus.readers import resolve_format

    sources = []
    for given, path in zip(inputs, read_paths):
        name, message = resolve_format(fmt, path, labeled=labeled)
        shown = STDIO if given == STDIO else given
        if fmt == "auto":
            log(f"{shown}: {message}")
        sources.append(InputSource(given, path, name, message if fmt == "auto" else ""))
    return sources


def duplicate_id_error(doc_id: str, where: str, first: str, more: str = "") -> CorpusError:
    """The error for a document id given twice: ``where`` has it again after ``first``."""
    return CorpusError(where, None, f"document id {doc_id!r} is also the id of a document of {first}{more}; "
                                    f"give inputs whose file names differ, or one directory holding both")


def no_documents_error(path: str, fmt: str, read: int, rejected: int, reasons: dict[str, int]) -> CorpusError:
    """The error for an input from which no document could be read (never "0 documents")."""
    why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "no records"
    return CorpusError(path, None, f"no document could be read as {fmt} ({read} record(s) read, "
                                   f"{rejected} rejected: {why})")


def _claim_id(seen: dict[str, str], doc: Document, src: InputSource) -> None:
    where = doc.source or src.path
    if doc.id in seen:
        raise duplicate_id_error(doc.id, where, seen[doc.id])
    seen[doc.id] = where


def check_unique_ids(sources: Sequence[InputSource], column: str | None = None) -> int:
    """Read every input once for its document ids; two documents with one id raise ``CorpusError``
    naming both sources (before anything is tagged or written). Returns the characters of all the
    documents (what a progress bar of the tagging counts to)."""
    seen: dict[str, str] = {}
    chars = 0
    for src in sources:
        for d in src.documents(column, report=ReadReport()):
            _claim_id(seen, d, src)
            chars += len(d.text)
    return chars


def require_documents(src: InputSource) -> None:
    """``CorpusError`` when the (read) input gave no document."""
    r = src.report
    if r.kept == 0:
        raise no_documents_error(src.path, src.format, r.read, r.rejected, dict(r.reasons))


def load_inputs(sources: Sequence[InputSource], column: str | None = None) -> list[Document]:
    """Every document of the inputs, in order, read once: duplicate ids and an input with no
    document raise ``CorpusError`` as :func:`check_unique_ids` and :func:`require_documents` do."""
    seen: dict[str, str] = {}
    docs: list[Document] = []
    for src in sources:
        for d in src.documents(column):
            _claim_id(seen, d, src)
            docs.append(d)
        require_documents(src)
    return docs


def read_labeled(data: str | os.PathLike, fmt: str, *, max_rejected: float, strict: bool,
                 log: Log = say) -> tuple[list[Document], InputSource]:
    """A labeled corpus to score: its format detected (or checked) with labels required, every
    document read, the rejection policy applied (:func:`cemr.corpus.policy.check_rejections`)."""
    from cemr.corpus.policy import check_rejections

    src = resolve_sources([str(data)], [str(data)], fmt, labeled=True, log=log)[0]
    docs = load_inputs([src])
    check_rejections(src.report, str(data), max_rejected=max_rejected, strict=strict)
    return docs, src


def check_model_dirs(model_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """One model directory or several as a list, each checked (:func:`cemr.modeldir.check_model_dir`)
    before any is loaded; ``ValueError`` for none."""
    from cemr.modeldir import check_model_dir

    dirs = [model_dir] if isinstance(model_dir, (str, os.PathLike)) else list(model_dir)
    if not dirs:
        raise ValueError("no model directory given")
    for d in dirs:
        check_model_dir(d)
    return dirs


def load_predictor(model_dir: str | os.PathLike | Sequence[str | os.PathLike], device: str = "auto", *,
                   max_len: int | None = None, precision: str = "fp32") -> Any:
    """The predictor of one model directory, or of several (the seeds of one config) as a seed
    ensemble (:func:`cemr.ensemble.load_ensemble`, float32 only); each directory checked first."""
    from cemr.predictor import Predictor

    dirs = check_model_dirs(model_dir)
    if len(dirs) == 1:
        return Predictor.load(dirs[0], device, max_len=max_len, precision=precision)
    from cemr.ensemble import EnsembleError, load_ensemble

    if precision != "fp32":
        raise EnsembleError(f"--precision {precision}: an ensemble of {len(dirs)} models runs in fp32 only")

    return load_ensemble(dirs, device, max_len=max_len)


def predict_files(model_dir: str | os.PathLike | Sequence[str | os.PathLike], inputs: Sequence[str], out: str | os.PathLike, *,
                  input_format: str = "auto", out_format: str = "jsonl", device: str = "auto",
                  column: str | None = None, overwrite: bool = False, step: int | None = None,
                  max_len: int | None = None, stdin: Any = None, stdout: Any = None,
                  low_confidence: float | None = None, precision: str = "fp32", log: Log = say) -> dict[str, Any]:
    """``cemr predict``: tag documents from files; JSON lines (spans with confidence, on document
    offsets), BRAT, or one self-contained HTML page (:mod:`cemr.review.html`; entities below
    ``low_confidence`` marked). Returns the summary: documents written, the output, and per input
    its format and accounting. Raises before writing anything for a bad output, duplicate ids,
    an input that does not fit its format, or an unreadable model directory.

    Documents stream through :meth:`cemr.predictor.Predictor.iter_documents` (``step`` sentences
    tagged at a time, its default when None): on standard output each document's line is written
    and flushed as soon as it is tagged; a file or directory output still appears only when complete.
    A progress bar on stderr counts the characters tagged (:mod:`cemr.progress`), so it moves inside
    one long document too."""
    if out_format not in OUT_FORMATS:
        raise OutputError(f"--out-format {out_format!r}: expected one of {', '.join(OUT_FORMATS)}")
    if out_format == "brat" and str(out) == STDIO:
        raise OutputError("--out -: BRAT output is a directory; standard output takes jsonl only")
    if out_format == "html" and str(out) == STDIO:
        raise OutputError("--out -: the HTML view is written to a file (open it in a browser); standard output "
                          "takes jsonl only")
    if low_confidence is not None and not 0 <= low_confidence <= 1:
        raise OutputError(f"--low-confidence {low_confidence}: expected a confidence in [0, 1]")
    check_output(out, inputs, overwrite=overwrite, kind="dir" if out_format == "brat" else "file")
    check_model_dirs(model_dir)
    with stdin_as_file(inputs, stdin) as read_paths:
        sources = resolve_sources(inputs, read_paths, input_format, labeled=False, log=log)
        chars = check_unique_ids(sources, column)
        predictor = load_predictor(model_dir, device, max_len=max_len, precision=precision)

        def documents() -> Iterator[Document]:
            for src in sources:
                yield from src.documents(column)
                require_documents(src)

        with progress(total=chars, desc="predict", unit="char", unit_scale=True) as bar:
            tagged = predictor.iter_documents(documents(), step=step, progress=bar)
            if out_format == "brat":
                from cemr.corpus.writers import write_brat

                with atomic_dir(out, overwrite=overwrite) as tmp:
                    n = write_brat((Document(d.id, d.text, [p.span for p in preds]) for d, preds in tagged), tmp,
                                   types=predictor.labels.types)
            elif out_format == "html":
                from cemr.review.html import DEFAULT_LOW_CONFIDENCE, write_html

                low = DEFAULT_LOW_CONFIDENCE if low_confidence is None else low_confidence
                title = f"cemr predict: {', '.join(map(str, inputs))}"
                with atomic_open(out, "w") as fh:
                    n = write_html(tagged, fh, predictor.labels.types, low_confidence=low, title=title)
            elif str(out) == STDIO:
                n = _write_jsonl(tagged, stdout if stdout is not None else sys.stdout, stream=True)
            else:
                with atomic_open(out, "w") as fh:
                    n = _write_jsonl(tagged, fh)
    return {"documents": n, "out": str(out), "out_format": out_format,
            "inputs": {src.path: src.summary() for src in sources}}


def _write_jsonl(tagged: Iterable[tuple[Document, list[Any]]], fh: Any, stream: bool = False) -> int:
    """One JSON line per document; ``stream``: each written and flushed as it comes (stdout)."""
    n = 0
    for d, preds in tagged:
        row = {"id": d.id, "text": d.text,
               "entities": [{**p.span.to_dict(), "mention": d.text[p.span.start:p.span.end],
                             "confidence": round(p.confidence, 6)} for p in preds]}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        if stream:
            write(line, fh)
        else:
            fh.write(line)
        n += 1
    return n


def tag_records(predictor: Any, texts: Sequence[str], batch_size: int | None = None) -> list[list[dict[str, Any]]]:
    """Raw records of any length tagged as ``cemr predict`` tags them (split as unseen text is,
    mapped back): per text ``[{"start", "end", "type", "confidence"}]`` on its own offsets, end
    exclusive. What the MLflow pyfunc model serves."""
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    preds = predictor.predict_documents(docs, batch_size=batch_size)
    return [[{**p.span.to_dict(), "confidence": float(p.confidence)} for p in preds[d.id]] for d in docs]


def evaluate_documents(predictor: Any, docs: Sequence[Document], batch_size: int | None = None, *,
                       desc: str = "evaluate") -> Any:
    """The one way a model is scored: ``docs`` (raw text + every gold span) tagged whole by
    :meth:`cemr.predictor.Predictor.predict_documents` (split as unseen text is, mapped back to
    document offsets) and scored by :func:`cemr.metrics.evaluate`. Returns the ``EvalReport``.
    A progress bar named ``desc`` counts the characters tagged (:mod:`cemr.progress`)."""
    from cemr.metrics import evaluate

    with progress(total=sum(len(d.text) for d in docs), desc=desc, unit="char", unit_scale=True) as bar:
        preds = predictor.predict_documents(docs, batch_size=batch_size, progress=bar)
    return evaluate(docs, {k: [p.span for p in v] for k, v in preds.items()})


@dataclass
class Evaluation:
    """What ``cemr evaluate`` reports: the scores, what the reader kept and rejected, warnings."""

    report: Any  # cemr.metrics.EvalReport
    data: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "data": self.data, "warnings": self.warnings}


def type_mismatch(model_types: set[str], data_types: set[str]) -> str | None:
    """A warning when the model's entity types and the data's differ, else None."""
    if model_types == data_types:
        return None
    parts = []
    if data_types - model_types:
        parts.append(f"types in the data the model never predicts: {', '.join(sorted(data_types - model_types))}")
    if model_types - data_types:
        parts.append(f"types the model predicts that the data does not have: "
                     f"{', '.join(sorted(model_types - data_types))}")
    return "entity types differ: " + "; ".join(parts)


def evaluate_model_dir(model_dir: str | os.PathLike | Sequence[str | os.PathLike], fmt: str, data: str | os.PathLike, device: str = "auto",
                       max_len: int | None = None, *, max_rejected: float = 0.0, strict: bool = False,
                       log: Log = say) -> Evaluation:
    """``cemr evaluate``: read a labeled corpus, tag whole documents (split and mapped back), score.

    The reader's accounting comes with the scores; a corpus with rejected records beyond
    ``max_rejected`` (any with ``strict``) or with none readable is an error, never scored as
    "no entities"; entity types that differ between model and data are a warning (an error with
    ``strict``). Several model directories: their seed ensemble (:func:`load_predictor`)."""
    check_model_dirs(model_dir)
    docs, src = read_labeled(data, fmt, max_rejected=max_rejected, strict=strict, log=log)
    predictor = load_predictor(model_dir, device, max_len=max_len)
    warnings = []
    model_types = set(predictor.labels.types)
    data_types = {s.type for d in docs for s in d.spans}
    mismatch = type_mismatch(model_types, data_types)
    if mismatch:
        if strict:
            raise CorpusError(str(data), None, f"{mismatch} (--strict)")
        warnings.append(mismatch)
        log(f"warning: {data}: {mismatch}")
    r = src.report
    if r.rejected or r.spans_dropped:
        warnings.append(f"the reader rejected {r.rejected} of {r.read} record(s) (not scored) and dropped "
                        f"{r.spans_dropped} of {r.spans_read} gold span(s); see data.reasons")
        log(f"warning: {data}: {warnings[-1]}")
    return Evaluation(evaluate_documents(predictor, docs), src.summary(), warnings)
