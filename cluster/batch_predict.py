"""Streaming batch inference with Ray Data: input files in, sharded predictions and a manifest out.

The driver never holds documents: only the list of inputs, each input's reader accounting and each
shard's document count. A million-document corpus costs the driver what a thousand do::

    from_items(one row per input) -> map_batches(read_input_batches)   cemr's reader of the input, in a task
      pass 1 (ids): (key, id, source) rows; the reader's accounting -> <tmp>/_reads/<k>.json
        -> groupby(key).aggregate(Count, Min/Max of id and source)     a key seen twice: CorpusError
      pass 2 (tag): (id, text, input) rows -> repartition(target_num_rows_per_block=batch)
        -> map_batches(DocumentTagger, compute=ActorPoolStrategy(size=cluster.actors),
                       num_cpus=actor_num_cpus, num_gpus=actor_num_gpus)
        -> write_datasink(ShardSink)   one part-<task>.<ext> per write task (about rows_per_shard rows)
    manifest.json: per input read / kept / rejected / reasons / written, per shard its documents

Inputs are files or directories read with cemr's readers, one read task per input
(:class:`cemr.inference.InputSource`: the format detected or checked on the driver, from the first
lines only), so a corpus given as several inputs is read in parallel. Every input is read twice:
once for its ids and accounting (nothing is tagged while ids repeat or an input has no readable
document), once to tag. Written must equal kept, per input and in all, or :class:`BatchPredictError`.

Output (``out_format``): ``jsonl`` (``part-NNNNNN.jsonl``, one ``{"id", "text", "entities": [{"start",
"end", "type", "mention", "confidence"}]}`` per line, document offsets, end exclusive: what ``cemr
predict`` writes), ``parquet`` (``part-NNNNNN.parquet``, the same fields, ``OUTPUT_SCHEMA``) or
``brat`` (``<name>.txt`` + ``<name>.ann``, named from the ids as :func:`cemr.corpus.writers.write_brat`
names them, a name being a function of its id alone, so write tasks agree without talking; a shard
is the documents one write task wrote; then ``annotation.conf`` and ``visual.conf`` declaring the
model's entity types, and ``cemr_ids.jsonl`` gathering every name that differs from its id from
the write tasks' lists, file to file). The output is a directory filled in a temporary
sibling (:func:`cemr.outputs.atomic_dir`) that is renamed at the end: it appears complete, with its
``manifest.json``, or not at all. It must be on storage every node sees, as the inputs and the model.
Shards hold documents in no particular order; ``id`` says which is which.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from cemr.progress import say
from cluster.pseudolabel import plan_blocks
from cluster.runtime import actor_device, actor_resources

OUT_FORMATS = ("jsonl", "parquet", "brat")
MANIFEST = "manifest.json"
READS_DIR = "_reads"  # the readers' accounting, per input, while the output is being made
NAMES_DIR = "_names"  # BRAT: per write task, its renamed files (name -> id), while the output is being made
MAX_DUPLICATES = 5  # repeated ids quoted by the error
ENTITY_TYPE = pa.struct([pa.field("start", pa.int32()), pa.field("end", pa.int32()), pa.field("type", pa.string()),
                         pa.field("mention", pa.string()), pa.field("confidence", pa.float64())])
OUTPUT_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("text", pa.string()),
                           pa.field("entities", pa.list_(ENTITY_TYPE))])

Log = Callable[[str], None]


class BatchPredictError(RuntimeError):
    """The pipeline could not account for its input: documents written differ from those kept."""


# ----------------------------------------------------------------------------------------------
# Reading: one task per input, cemr's reader inside
# ----------------------------------------------------------------------------------------------


def prepare_sources(inputs: Sequence[str], fmt: str, log: Log) -> list[Any]:
    """One :class:`cemr.inference.InputSource` per input (format detected or checked here, on the
    driver, from each input's first lines), read from its absolute path (read tasks may run
    elsewhere, in another working directory)."""
    from cemr.inference import resolve_sources

    return resolve_sources(inputs, [str(Path(p).resolve()) for p in inputs], fmt, labeled=False, log=log)


def id_key(doc_id: str, out_format: str) -> str:
    """What must be unique among the documents: the id, or for BRAT the file name it becomes
    (:func:`cemr.corpus.brat_names.file_stem`, case-folded: ``A`` and ``a`` are one file on a
    case-insensitive file system)."""
    if out_format != "brat":
        return doc_id
    from cemr.corpus.brat_names import file_stem

    return file_stem(doc_id).casefold()


def read_input_batches(batch: Mapping[str, np.ndarray], *, sources: Sequence[Any], column: str | None,
                       chunk: int, ids_only: bool, out_format: str = "jsonl",
                       reads_dir: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data batch function (a generator) over rows ``{"input": k}``: the documents of
    ``sources[k]``, ``chunk`` at a time, as ``{"id", "text", "input"}`` or, ``ids_only``,
    ``{"key", "id", "source"}`` (:func:`id_key`). With ``reads_dir``, the reader's accounting of
    the input (``InputSource.summary``) is written to ``reads_dir/<k>.json`` once it is read whole."""
    from cemr.corpus.document import ReadReport
    from cemr.outputs import atomic_write_text

    for k in batch["input"]:
        k = int(k)
        src = replace(sources[k], report=ReadReport())
        for docs in _chunks(src.documents(column), chunk):
            ids = [d.id for d in docs]
            if ids_only:
                yield {"key": _objects([id_key(i, out_format) for i in ids]), "id": _objects(ids),
                       "source": _objects([d.source or src.path for d in docs])}
            else:
                yield {"id": _objects(ids), "text": _objects([d.text for d in docs]),
                       "input": np.full(len(docs), k, dtype=np.int64)}
        if reads_dir is not None:
            atomic_write_text(Path(reads_dir) / f"{k}.json", json.dumps(src.summary(), ensure_ascii=False))


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def read_dataset(sources: Sequence[Any], column: str | None, chunk: int, *, ids_only: bool,
                 out_format: str = "jsonl", reads_dir: str | None = None) -> ray.data.Dataset:
    """The documents of every input as a Ray Data dataset (lazy; one read task per input)."""
    rows = ray.data.from_items([{"input": k} for k in range(len(sources))], override_num_blocks=len(sources))
    return rows.map_batches(read_input_batches, batch_size=1, fn_kwargs={
        "sources": list(sources), "column": column, "chunk": int(chunk), "ids_only": ids_only,
        "out_format": out_format, "reads_dir": reads_dir})


def repeated_keys(ids: ray.data.Dataset, limit: int = MAX_DUPLICATES) -> list[dict[str, Any]]:
    """Up to ``limit`` keys found more than once in ``ids`` (rows ``key, id, source``), each as
    ``{"key", "n", "first_id", "last_id", "first_source", "last_source"}``: a distributed group-by,
    only the repeated keys reach the driver. The sort-based shuffle (plain tasks) is used, as in
    :func:`cluster.pseudolabel.count_outputs`."""
    from ray.data.aggregate import Count, Max, Min
    from ray.data.expressions import col

    ids.context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    grouped = ids.groupby("key").aggregate(
        Count(alias_name="n"), Min("id", alias_name="first_id"), Max("id", alias_name="last_id"),
        Min("source", alias_name="first_source"), Max("source", alias_name="last_source"))
    return grouped.filter(expr=col("n") > 1).take(limit)


def duplicate_error(row: Mapping[str, Any], out_format: str) -> Exception:
    """The :class:`cemr.corpus.document.CorpusError` for a repeated key (:func:`repeated_keys`)."""
    from cemr.corpus.document import CorpusError
    from cemr.inference import duplicate_id_error

    if row["first_id"] != row["last_id"]:
        return CorpusError(row["last_source"], None, f"document ids {row['first_id']!r} (of {row['first_source']}) "
                                                     f"and {row['last_id']!r} map to one {out_format} file name; "
                                                     f"rename one, or write jsonl or parquet")
    more = f" ({row['n']} documents have it)" if row["n"] > 2 else ""
    return duplicate_id_error(row["last_id"], row["last_source"], row["first_source"], more)


def load_reads(reads_dir: Path, sources: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The accounting of every input (``reads_dir/<k>.json``) by input path; an input read with
    no document kept raises ``CorpusError`` (never "0 documents")."""
    from cemr.inference import no_documents_error

    out = {}
    for k, src in enumerate(sources):
        path = reads_dir / f"{k}.json"
        if not path.is_file():
            raise BatchPredictError(f"{src.path}: its read task left no accounting ({path})")
        acc = json.loads(path.read_text(encoding="utf-8"))
        if acc["kept"] == 0:
            raise no_documents_error(src.path, src.format, acc["read"], acc["rejected"], acc["reasons"])
        out[src.path] = acc
    return out


# ----------------------------------------------------------------------------------------------
# Tagging: the actor pool
# ----------------------------------------------------------------------------------------------


class DocumentTagger:
    """Ray Data callable class: ``{"id", "text", ...}`` batches -> the same columns and ``entities``
    (a JSON list of ``{"start", "end", "type", "confidence"}`` per document, document offsets),
    tagged by :func:`cemr.inference.tag_records` with one :class:`cemr.predictor.Predictor` per
    actor, on the device Ray assigned it (:func:`cluster.runtime.assigned_device`)."""

    def __init__(self, model_dir: str, device: str, confidence: str, max_len: int | None = None,
                 batch_size: int = 64, precision: str = "fp32"):
        from cemr.predictor import Predictor
        from cluster.runtime import assigned_device

        if device != "cpu":  # the GPU Ray assigned this actor
            device = assigned_device(device, ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.predictor = Predictor.load(model_dir, device, confidence=confidence, max_len=max_len,
                                        batch_size=batch_size, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cemr.inference import tag_records

        tagged = tag_records(self.predictor, [str(t) for t in batch["text"]])
        out = dict(batch)
        out["id"] = _objects([str(i) for i in batch["id"]])
        out["entities"] = _objects([json.dumps(preds, ensure_ascii=False) for preds in tagged])
        return out


def tag_dataset(ds: ray.data.Dataset, model_dir: str | os.PathLike, cfg: Any, batch_size: int,
                max_len: int | None = None) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """``ds`` (``id``, ``text``, ...) tagged by a pool of ``cluster.actors`` :class:`DocumentTagger`
    actors sized by :func:`cluster.runtime.actor_resources` (GPUs waited for as configured); returns
    the lazy dataset and the sizing."""
    res = actor_resources(cfg.cluster)
    tagged = ds.map_batches(
        DocumentTagger,
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()), "device": actor_device(res["num_gpus"]),
                               "confidence": cfg.selftrain.confidence,
                               "max_len": int(max_len) if max_len else None,
                               "precision": cfg.cluster.actor_precision},
        compute=ray.data.ActorPoolStrategy(size=int(cfg.cluster.actors)),
        batch_size=batch_size,
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        memory=res["memory"],
        udf_modifying_row_count=False,
    )
    return tagged, res


# ----------------------------------------------------------------------------------------------
# Writing: one shard per write task, its count returned
# ----------------------------------------------------------------------------------------------


def output_row(doc_id: str, text: str, preds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One output record: ``{"id", "text", "entities": [{"start", "end", "type", "mention",
    "confidence"}]}`` (confidence rounded to 6 places), as ``cemr predict`` writes it."""
    return {"id": doc_id, "text": text,
            "entities": [{"start": int(p["start"]), "end": int(p["end"]), "type": p["type"],
                          "mention": text[p["start"]:p["end"]], "confidence": round(float(p["confidence"]), 6)}
                         for p in preds]}


def _block_rows(block: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    table = BlockAccessor.for_block(block).to_arrow()
    for doc_id, text, ents, k in zip(*(table.column(c).to_pylist() for c in ("id", "text", "entities", "input"))):
        yield int(k), output_row(doc_id, text, json.loads(ents))


class ShardSink(Datasink):
    """Writes each write task's rows as one shard of ``out_dir`` (``part-<task>.<ext>``, written to a
    temporary name and renamed, so a retried task replaces its shard); each task returns
    ``{"name", "documents", "inputs": {input index: documents}}``, gathered in ``shards`` by
    ``on_write_complete`` (on the driver). ``rows_per_shard``: rows Ray Data bundles per task."""

    def __init__(self, out_dir: str | os.PathLike, out_format: str, rows_per_shard: int):
        if out_format not in OUT_FORMATS:
            raise ValueError(f"out_format {out_format!r}: expected one of {', '.join(OUT_FORMATS)}")
        self.out_dir = str(out_dir)
        self.out_format = out_format
        self.rows_per_shard = int(rows_per_shard)
        self.shards: list[dict[str, Any]] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        per_input: dict[int, int] = {}
        rows = []
        for block in blocks:
            for k, row in _block_rows(block):
                per_input[k] = per_input.get(k, 0) + 1
                rows.append(row)
        name = f"part-{ctx.task_idx:06d}" + ("" if self.out_format == "brat" else f".{self.out_format}")
        types = write_shard(rows, Path(self.out_dir), name, self.out_format)
        out = {"name": name, "documents": len(rows), "inputs": per_input}
        if self.out_format == "brat":
            out["types"] = types
        return out

    def on_write_complete(self, write_result: Any) -> None:
        self.shards = sorted((r for r in write_result.write_returns if r), key=lambda r: r["name"])


def write_shard(rows: Sequence[Mapping[str, Any]], out_dir: Path, name: str, out_format: str) -> list[str]:
    """Write ``rows`` (:func:`output_row`) as the shard ``name`` of ``out_dir``: JSON lines or a
    Parquet file (temporary name, then renamed), or BRAT pairs (their own names; the names that
    differ from their ids listed in ``out_dir/NAMES_DIR/<name>.jsonl``). Returns the entity
    types written (BRAT; else ``[]``)."""
    if out_format == "brat":
        return _write_brat_shard(rows, out_dir, name)
    tmp = out_dir / f".{name}.tmp"
    if out_format == "parquet":
        pq.write_table(pa.Table.from_pylist(list(rows), schema=OUTPUT_SCHEMA), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, out_dir / name)
    return []


def _write_brat_shard(rows: Sequence[Mapping[str, Any]], out_dir: Path, name: str) -> list[str]:
    from cemr.corpus.brat_names import id_map_lines
    from cemr.corpus.document import Document, Span
    from cemr.corpus.writers import BratWriter

    writer = BratWriter(out_dir, side_files=False)
    for r in rows:
        writer.write(Document(r["id"], r["text"], [Span(e["start"], e["end"], e["type"]) for e in r["entities"]]))
    names = out_dir / NAMES_DIR
    names.mkdir(exist_ok=True)
    tmp = names / f".{name}.tmp"
    tmp.write_text("".join(id_map_lines(writer.namer.renamed)), encoding="utf-8")
    os.replace(tmp, names / f"{name}.jsonl")  # a retried task replaces its list
    return writer.types()


def finish_brat(out_dir: Path, types: Sequence[str], shards: Sequence[Mapping[str, Any]]) -> int:
    """A BRAT output's side files once every shard is written: ``annotation.conf`` and
    ``visual.conf`` declaring ``types`` then every other type the shards wrote, and
    ``cemr_ids.jsonl`` made of the shards' lists of renamed files (copied file to file, in shard
    order; the driver never holds them), which are then removed. Returns the files renamed."""
    from cemr.corpus.brat_names import ID_MAP
    from cemr.corpus.writers import write_brat_side_files

    seen = {t for s in shards for t in s.get("types", ())}
    write_brat_side_files(out_dir, [*types, *sorted(seen - set(types))], ())
    names = out_dir / NAMES_DIR
    renamed = 0
    if names.is_dir():
        lists = sorted(names.glob("*.jsonl"))
        with open(out_dir / ID_MAP, "w", encoding="utf-8") as out:
            for f in lists:
                with open(f, encoding="utf-8") as fh:
                    for line in fh:
                        out.write(line)
                        renamed += 1
        for f in names.iterdir():
            f.unlink()
        names.rmdir()
        if renamed == 0:
            (out_dir / ID_MAP).unlink()
    return renamed


def model_types(model_dir: str | os.PathLike) -> list[str]:
    """The entity types of a model directory (its ``labels.json``), read without loading it."""
    from cemr.modeldir import LABELS_FILE
    from cemr.tags import LabelSet

    return list(LabelSet.from_list(json.loads((Path(model_dir) / LABELS_FILE).read_text(encoding="utf-8"))).types)


# ----------------------------------------------------------------------------------------------
# The manifest and the driver
# ----------------------------------------------------------------------------------------------


def build_manifest(reads: Mapping[str, Mapping[str, Any]], shards: Sequence[Mapping[str, Any]],
                   out_format: str, model_dir: str) -> dict[str, Any]:
    """The manifest (pure): per input its accounting and ``written``, per shard its documents,
    the totals. ``shards[i]["inputs"]`` are keyed by input position (the order of ``reads``)."""
    written: dict[int, int] = {}
    for s in shards:
        for k, n in s["inputs"].items():
            written[int(k)] = written.get(int(k), 0) + int(n)
    inputs = {path: {**acc, "written": written.get(k, 0)} for k, (path, acc) in enumerate(reads.items())}
    totals = {key: sum(int(a[key]) for a in inputs.values()) for key in ("read", "kept", "rejected", "written")}
    return {"format": out_format, "model": model_dir, "documents": totals, "inputs": inputs,
            "shards": [{"name": s["name"], "documents": int(s["documents"])} for s in shards]}


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """``BatchPredictError`` unless every input's written documents equal its kept ones and the
    shards hold them all."""
    wrong = [f"{path}: {a['kept']} kept, {a['written']} written" for path, a in manifest["inputs"].items()
             if a["written"] != a["kept"]]
    in_shards = sum(s["documents"] for s in manifest["shards"])
    if in_shards != manifest["documents"]["written"]:
        wrong.append(f"the shards hold {in_shards} documents, the inputs' counts say {manifest['documents']['written']}")
    if wrong:
        raise BatchPredictError("documents were lost or duplicated between reading and writing: " + "; ".join(wrong)
                                + ". Nothing was written; run again (an input changed while it was read?)")


def predict_to_shards(inputs: Sequence[str], out: str | os.PathLike, model_dir: str | os.PathLike, cfg: Any, *,
                      input_format: str = "auto", column: str | None = None, out_format: str = "jsonl",
                      overwrite: bool = False, max_len: int | None = None, log: Log = say,
                      sources: Sequence[Any] | None = None) -> dict[str, Any]:
    """Tag every document of ``inputs`` into the directory ``out`` (module docstring); returns the
    manifest with ``out``, ``seconds`` and the actor sizing. Ray must be initialised. The output
    is checked (never an input, an existing one replaced only with ``overwrite``) and the model
    directory read before anything runs; repeated ids or an input without a readable document
    raise ``CorpusError`` before anything is tagged. ``sources``: ``inputs`` already resolved by
    :func:`prepare_sources` (their formats detected or checked before Ray started)."""
    from cemr.modeldir import check_model_dir
    from cemr.outputs import atomic_dir, atomic_write_text, check_output

    if out_format not in OUT_FORMATS:
        raise ValueError(f"--out-format {out_format!r}: expected one of {', '.join(OUT_FORMATS)}")
    if not ray.is_initialized():
        raise BatchPredictError("Ray is not initialised: call cluster.runtime.init_ray first")
    check_output(out, inputs, overwrite=overwrite, kind="dir")
    check_model_dir(model_dir)
    if sources is None:
        sources = prepare_sources(inputs, input_format, log)
    chunk = int(cfg.cluster.batch_size)
    started = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp = tmp.resolve()
        reads_dir = tmp / READS_DIR
        reads_dir.mkdir()
        ids = read_dataset(sources, column, chunk, ids_only=True, out_format=out_format, reads_dir=str(reads_dir))
        repeated = repeated_keys(ids)
        reads = load_reads(reads_dir, sources)
        if repeated:
            raise duplicate_error(repeated[0], out_format)
        kept = sum(a["kept"] for a in reads.values())
        _, batch = plan_blocks(kept, int(cfg.cluster.actors), chunk)
        log(f"batch predict: {kept} documents from {len(sources)} input(s); model {model_dir}; batches of {batch}")
        docs = read_dataset(sources, column, chunk, ids_only=False).repartition(target_num_rows_per_block=batch)
        tagged, res = tag_dataset(docs, model_dir, cfg, batch, max_len)
        sink = ShardSink(tmp, out_format, int(cfg.cluster.rows_per_shard))
        tagged.write_datasink(sink)
        for f in reads_dir.iterdir():
            f.unlink()
        reads_dir.rmdir()
        manifest = build_manifest(reads, sink.shards, out_format, str(Path(model_dir).resolve()))
        check_manifest(manifest)
        if out_format == "brat":
            manifest["renamed"] = finish_brat(tmp, model_types(model_dir), sink.shards)
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
    seconds = time.perf_counter() - started
    log(f"batch predict: {manifest['documents']['written']} documents in {len(manifest['shards'])} shard(s), "
        f"{seconds:.1f} s -> {out}")
    return {**manifest, "out": str(Path(out).resolve()), "seconds": round(seconds, 3),
            "actors": int(cfg.cluster.actors), "num_cpus_per_actor": res["num_cpus"],
            "num_gpus_per_actor": res["num_gpus"], "cpu_fallback": bool(res["cpu_fallback"])}
