"""``python -m jobs.predict --input PATH [--input PATH ...] --out DIR [options] [key=value ...]``:
streaming batch inference with Ray Data (:mod:`cluster.batch_predict`).

Inputs are files or directories read with cemr's readers in Ray tasks, one per input
(``--input-format``: ``auto``, detected per input, ``text`` or a labeled format, whose labels are
ignored; rejected records are counted in the manifest, never silently dropped); the documents are
tagged by a pool of actors (:class:`cluster.batch_predict.DocumentTagger`: one
:class:`cemr.predictor.Predictor` per actor; records split into sentences of at most ``--max-len``
chars, by default the model's own, and mapped back: :func:`cemr.inference.tag_records`) and written
as shards of the directory ``--out``: ``part-NNNNNN.jsonl`` (``{"id", "text", "entities": [{"start",
"end", "type", "mention", "confidence"}]}``, document offsets, end exclusive), ``part-NNNNNN.parquet``
(the same fields) or BRAT (``<id>.txt`` + ``<id>.ann``), with ``manifest.json``: per input what was
read, kept, rejected (with reasons) and written, per shard its documents. The driver holds no
documents, so a corpus of any size fits.

The output is checked before anything is read (never an input; an existing one replaced only with
``--overwrite``) and appears complete or not at all; repeated document ids stop the job before
anything is tagged (exit 2); documents written that differ from those kept fail it (exit 1).

The model is ``--model DIR``, by default the best round's model of ``run_dir`` (its
``state.json``). Actors: ``cluster.actors`` x (``cluster.actor_num_cpus``, ``cluster.actor_num_gpus``,
waited for up to ``cluster.gpu_wait_s``); batches of up to ``cluster.batch_size`` documents; shards of
about ``cluster.rows_per_shard`` documents. Inputs, model and output must be on storage every node sees.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cluster.batch_predict import OUT_FORMATS, DocumentTagger  # noqa: F401 - DocumentTagger: the actor of both jobs
from jobs._common import build_parser, load_job_config, log_line, run_job


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
    from cemr.inference import load_inputs, resolve_sources

    sources = resolve_sources(inputs, inputs, fmt, labeled=False, log=log_line)
    docs = load_inputs(sources, column)
    return docs, {src.path: src.summary() for src in sources}


def tag_texts(items: Sequence[tuple[str, str]], model_dir: str | Path, cfg: Any, max_len: int | None = None
              ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(id, predictions)`` for each ``(id, text)``, in input order, tagged by the actor pool of
    :func:`cluster.batch_predict.tag_dataset`: for documents already in the driver's memory
    (``jobs.evaluate``, which needs their gold spans there anyway). Ray must be initialised."""
    import ray

    from cluster.batch_predict import tag_dataset

    if not items:
        return iter(())
    actors = int(cfg.cluster.actors)
    batch = max(1, min(int(cfg.cluster.batch_size), -(-len(items) // (2 * actors))))
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in items],
                             override_num_blocks=max(1, min(len(items), 2 * actors)))
    ds.context.execution_options.preserve_order = True  # output in input order
    ds.context.enable_progress_bars = False
    tagged, _ = tag_dataset(ds, model_dir, cfg, batch, max_len)
    return ((str(row["id"]), json.loads(row["entities"])) for row in tagged.iter_rows())


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.modeldir import check_model_dir
    from cemr.outputs import check_output
    from cluster.batch_predict import predict_to_shards
    from cluster.bootstrap import connect
    from cluster.runtime import shutdown_if_owned

    cfg = load_job_config(args)
    model_dir = Path(args.model) if args.model else best_model_dir(cfg.run_dir)
    check_output(args.out, args.input, overwrite=args.overwrite, kind="dir")  # before Ray starts
    check_model_dir(model_dir)
    ctx = connect(cfg, log_line)
    try:
        return predict_to_shards(args.input, args.out, model_dir, cfg, input_format=args.input_format,
                                 column=args.column, out_format=args.out_format, overwrite=args.overwrite,
                                 max_len=args.max_len, log=log_line)
    finally:
        shutdown_if_owned(ctx)


def parser() -> argparse.ArgumentParser:
    p = build_parser("jobs.predict", __doc__)
    p.add_argument("--model", help="model directory (default: the best round of run_dir)")
    p.add_argument("--input", action="append", required=True, help="file or directory (repeatable)")
    p.add_argument("--input-format", default="auto",
                   help="auto (default: detected per input), text, or a labeled format (labels ignored)")
    p.add_argument("--column", default=None, help="column / JSON field of the text (text inputs)")
    p.add_argument("--out", required=True,
                   help="output directory: shards part-NNNNNN.<format> (BRAT: <id>.txt/.ann) and manifest.json; "
                        "never an input")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--out-format", default="jsonl", choices=OUT_FORMATS)
    p.add_argument("--max-len", type=int, default=None,
                   help="sentence length for splitting (default: the one the model directory records)")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
