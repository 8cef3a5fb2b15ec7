"""``python -m jobs.predict --input PATH [--input PATH ...] --out OUT [options] [key=value ...]``:
batch inference with Ray Data.

Documents are read on the driver with cemr's readers (``--input-format``: ``auto``, detected per
input, ``text`` or a labeled format, whose labels are ignored; rejected records are counted in the
summary, never silently dropped), handed to Ray Data (``from_items``: the corpus must fit in the
driver's memory; for a larger pool, ``prepare`` it into shards and use the pseudo-labeling
pipeline), tagged by a pool of actors (:class:`DocumentTagger`: one
:class:`cemr.predictor.Predictor` per actor; records split into sentences of at most ``--max-len``
chars, by default the model's own, and mapped back: :func:`cemr.inference.tag_records`), and
written in input order as JSON lines (``{"id", "text", "entities": [{"start", "end", "type",
"mention", "confidence"}]}``, document offsets, end exclusive) or as BRAT (``<id>.txt`` +
``<id>.ann``). The output is checked before anything is read (never an input; an existing one
replaced only with ``--overwrite``) and appears complete or not at all.

The model is ``--model DIR``, by default the best round's model of ``run_dir`` (its
``state.json``). Actors: ``cluster.actors`` x (``cluster.actor_num_cpus``, ``cluster.actor_num_gpus``
when the cluster has GPUs); batches of ``cluster.batch_size`` documents.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from jobs._common import build_parser, load_job_config, log_line, run_job

FORMATS_OUT = ("jsonl", "brat")


class DocumentTagger:
    """Ray Data callable class: ``{"id", "text"}`` batches -> ``{"id", "entities"}`` (a JSON list
    of predictions per document, document offsets)."""

    def __init__(self, model_dir: str, device: str, confidence: str, max_len: int | None = None,
                 batch_size: int = 64):
        import os

        import ray

        from cemr.predictor import Predictor
        from cluster.runtime import assigned_device

        if device != "cpu":  # the GPU Ray assigned this actor
            device = assigned_device(device, ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.predictor = Predictor.load(model_dir, device, confidence=confidence, max_len=max_len,
                                        batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cemr.inference import tag_records

        ids = [str(i) for i in batch["id"]]
        tagged = tag_records(self.predictor, [str(t) for t in batch["text"]])
        entities = [json.dumps(preds, ensure_ascii=False) for preds in tagged]
        return {"id": np.array(ids, dtype=object), "entities": np.array(entities, dtype=object)}


def best_model_dir(run_dir: str | Path) -> Path:
    """The best round's model directory of a bootstrap run (from its ``state.json``)."""
    from cemr.selftrain import load_state

    state = load_state(run_dir)
    if state is None or state.best is None or not state.best.model_dir:
        raise FileNotFoundError(f"{Path(run_dir) / 'state.json'}: no completed round; pass --model DIR")
    return Path(state.best.model_dir)


def read_inputs(inputs: Sequence[str], fmt: str, column: str | None) -> tuple[list[Any], dict[str, Any]]:
    """Documents of every input, in order, and the readers' accounting (format detected or checked
    per input, as ``cemr predict`` does). Duplicate ids raise ``CorpusError`` naming both sources;
    an input with no readable document is an error."""
    from cemr.corpus.document import CorpusError
    from cemr.inference import resolve_sources

    docs, seen = [], {}
    sources = resolve_sources(inputs, inputs, fmt, labeled=False, log=log_line)
    for src in sources:
        for d in src.documents(column):
            where = d.source or src.path
            if d.id in seen:
                raise CorpusError(where, None, f"document id {d.id!r} is also the id of a document of {seen[d.id]}")
            seen[d.id] = where
            docs.append(d)
        if src.report.kept == 0:
            raise CorpusError(src.path, None, f"no document could be read as {src.format} "
                                              f"({src.report.read} record(s) read, {src.report.rejected} rejected)")
    return docs, {src.path: src.summary() for src in sources}


def tag_texts(items: Sequence[tuple[str, str]], model_dir: str | Path, cfg: Any, max_len: int | None = None
              ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(id, predictions)`` for each ``(id, text)``, in input order, tagged by a Ray Data actor
    pool. Ray must be initialised."""
    import ray

    from cluster.runtime import actor_device, actor_resources

    if not items:
        return iter(())
    res = actor_resources(cfg.cluster)
    actors = int(cfg.cluster.actors)
    batch = max(1, min(int(cfg.cluster.batch_size), -(-len(items) // (2 * actors))))
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in items],
                             override_num_blocks=max(1, min(len(items), 2 * actors)))
    ds.context.execution_options.preserve_order = True  # output in input order
    ds.context.enable_progress_bars = False
    tagged = ds.map_batches(
        DocumentTagger,
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()), "device": actor_device(res["num_gpus"]),
                               "confidence": cfg.selftrain.confidence,
                               "max_len": int(max_len) if max_len else None},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch,
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        memory=res["memory"],
    )
    return ((str(row["id"]), json.loads(row["entities"])) for row in tagged.iter_rows())


def write_predictions(docs: Sequence[Any], tagged: Iterator[tuple[str, list[dict[str, Any]]]], out: str | Path,
                      out_format: str, overwrite: bool = False) -> int:
    """Write JSON lines or BRAT, complete or not at all; every document must come back exactly once."""
    from cemr.corpus.document import Document, Span
    from cemr.corpus.writers import write_brat

    by_id = {d.id: d for d in docs}
    done: set[str] = set()

    def joined() -> Iterator[tuple[Any, list[dict[str, Any]]]]:
        for doc_id, preds in tagged:
            if doc_id not in by_id or doc_id in done:
                raise RuntimeError(f"prediction for unknown or repeated document {doc_id!r}")
            done.add(doc_id)
            yield by_id[doc_id], preds

    from cemr.outputs import atomic_dir, atomic_open

    out = Path(out)
    if out_format == "brat":
        with atomic_dir(out, overwrite=overwrite) as tmp:
            n = write_brat((Document(d.id, d.text, [Span(p["start"], p["end"], p["type"]) for p in preds])
                            for d, preds in joined()), tmp)
            _check_all_back(docs, done)
    else:
        n = 0
        with atomic_open(out, "w") as fh:
            for d, preds in joined():
                ents = [{"start": p["start"], "end": p["end"], "type": p["type"], "mention": d.text[p["start"]:p["end"]],
                         "confidence": round(float(p["confidence"]), 6)} for p in preds]
                fh.write(json.dumps({"id": d.id, "text": d.text, "entities": ents}, ensure_ascii=False) + "\n")
                n += 1
            _check_all_back(docs, done)
    return n


def _check_all_back(docs: Sequence[Any], done: set[str]) -> None:
    missing = [d.id for d in docs if d.id not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} document(s) came back without predictions, e.g. {missing[0]!r}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.modeldir import check_model_dir
    from cemr.outputs import check_output
    from cluster.bootstrap import connect
    from cluster.runtime import shutdown_if_owned

    cfg = load_job_config(args)
    model_dir = Path(args.model) if args.model else best_model_dir(cfg.run_dir)
    if args.out_format not in FORMATS_OUT:
        raise ValueError(f"--out-format must be one of {', '.join(FORMATS_OUT)}")
    check_output(args.out, args.input, overwrite=args.overwrite, kind="dir" if args.out_format == "brat" else "file")
    check_model_dir(model_dir)
    docs, accounting = read_inputs(args.input, args.input_format, args.column)
    log_line(f"predict: {len(docs)} documents from {len(args.input)} input(s); model {model_dir}")
    ctx = connect(cfg, log_line)
    try:
        n = write_predictions(docs, tag_texts([(d.id, d.text) for d in docs], model_dir, cfg, args.max_len),
                              args.out, args.out_format, overwrite=args.overwrite)
    finally:
        shutdown_if_owned(ctx)
    return {"model": str(model_dir), "documents": n, "out": str(Path(args.out).resolve()),
            "format": args.out_format, "inputs": accounting}


def parser() -> argparse.ArgumentParser:
    p = build_parser("jobs.predict", __doc__)
    p.add_argument("--model", help="model directory (default: the best round of run_dir)")
    p.add_argument("--input", action="append", required=True, help="file or directory (repeatable)")
    p.add_argument("--input-format", default="auto",
                   help="auto (default: detected per input), text, or a labeled format (labels ignored)")
    p.add_argument("--column", default=None, help="column / JSON field of the text (text inputs)")
    p.add_argument("--out", required=True, help="JSON lines file, or a directory for BRAT (never an input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--out-format", default="jsonl", choices=FORMATS_OUT)
    p.add_argument("--max-len", type=int, default=None,
                   help="sentence length for splitting (default: the one the model directory records)")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
