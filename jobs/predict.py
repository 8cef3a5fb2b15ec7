"""``python -m jobs.predict --model DIR INPUT... --out DIR [options] [key=value ...]``: streaming batch
inference with Ray Data (:mod:`cluster.batch_predict`).

Inputs are given as ``cemr predict`` takes them: files or directories, positional (mixed with the
``key=value`` config overrides: an argument ``dotted.key=value`` that is no existing path is an
override; ``--input PATH``, the older spelling, still adds one), their format detected per input
(``--input-format auto``, printing what it found) or checked against the data (``text`` or a
labeled format, whose labels are ignored), rejected records counted in the manifest, never silently
dropped, and an input from which no document can be read an error. Unlike ``cemr predict``, ``-``
(standard input) cannot be read: the inputs are read by Ray tasks, one per input, possibly on other
nodes. The documents are tagged by a pool of actors (:class:`cluster.batch_predict.DocumentTagger`:
one :class:`cemr.predictor.Predictor` per actor; records split into sentences of at most
``--max-len`` chars, by default the model's own, and mapped back: :func:`cemr.inference.tag_records`)
and written as shards of the directory ``--out``: ``part-NNNNNN.jsonl`` (``{"id", "text",
"entities": [{"start", "end", "type", "mention", "confidence"}]}``, document offsets, end
exclusive: what ``cemr predict`` writes), ``part-NNNNNN.parquet`` (the same fields) or BRAT
(``<name>.txt`` + ``<name>.ann`` named as ``cemr predict --out-format brat`` names them, with
``annotation.conf``, ``visual.conf`` and ``cemr_ids.jsonl``), with ``manifest.json``: per input what
was read, kept, rejected (with reasons) and written, per shard its documents. The driver holds no
documents, so a corpus of any size fits.

The output is checked before anything is read (never an input; an existing one replaced only with
``--overwrite``) and appears complete or not at all; repeated document ids stop the job before
anything is tagged (exit 2); documents written that differ from those kept fail it (exit 1).

The model is ``--model DIR``, by default the best round's model of ``run_dir`` (its
``state.json``). ``--device``: ``cpu`` runs every actor on CPU (``cluster.actor_num_gpus=0``);
``cuda`` gives each one a GPU (``cluster.actor_num_gpus``, 1 when it is 0), which Ray chooses, so
``cuda:N`` is refused; ``auto`` (the default) does what ``cluster.actor_num_gpus`` says (default 0:
CPU). Each actor then resolves the device it was given as ``cemr predict --device`` and
``train.device`` are resolved (:func:`cemr.training.resolve_device`). Actors: ``cluster.actors`` x
(``cluster.actor_num_cpus``, ``cluster.actor_num_gpus``, waited for up to ``cluster.gpu_wait_s``);
batches of up to ``cluster.batch_size`` documents; shards of about ``cluster.rows_per_shard``
documents. Inputs, model and output must be on storage every node sees.
"""
from __future__ import annotations

import argparse
import json
import re
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


JOB_DEVICES = ("auto", "cpu", "cuda")


def job_device(value: str) -> str:
    """``--device``: ``auto``, ``cpu`` or ``cuda`` (spelled as ``train.device`` and ``cemr predict
    --device``; ``cuda:N`` is refused: Ray chooses each actor's GPU)."""
    from cemr.config import DEVICE_PATTERN

    if value in JOB_DEVICES:
        return value
    if re.fullmatch(DEVICE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r}: Ray chooses each actor's GPU; use cuda (a GPU per actor), "
                                         f"cpu or auto")
    raise argparse.ArgumentTypeError(f"{value!r}: unknown device; use auto, cpu or cuda")


def device_overrides(device: str, actor_num_gpus: float) -> list[str]:
    """The config overrides ``--device`` stands for, given the configured ``cluster.actor_num_gpus``
    (module docstring): ``cpu`` -> 0 GPUs per actor, ``cuda`` -> 1 when none is configured."""
    if device == "cpu" and actor_num_gpus != 0:
        return ["cluster.actor_num_gpus=0"]
    if device == "cuda" and actor_num_gpus == 0:
        return ["cluster.actor_num_gpus=1"]
    return []


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.modeldir import check_model_dir
    from cemr.outputs import check_output
    from cluster.batch_predict import predict_to_shards, prepare_sources
    from cluster.bootstrap import connect
    from cluster.runtime import shutdown_if_owned

    cfg = load_job_config(args)
    extra = device_overrides(args.device, float(cfg.cluster.actor_num_gpus))
    if extra:
        args.overrides = [*(args.overrides or []), *extra]
        cfg = load_job_config(args)
        log_line(f"jobs.predict: --device {args.device}: {' '.join(extra)}")
    model_dir = Path(args.model) if args.model else best_model_dir(cfg.run_dir)
    # before Ray starts: the output, the model, each input's format (detected, or checked against the data)
    check_output(args.out, args.inputs, overwrite=args.overwrite, kind="dir")
    check_model_dir(model_dir)
    sources = prepare_sources(args.inputs, args.input_format, log_line)
    ctx = connect(cfg, log_line)
    try:
        return predict_to_shards(args.inputs, args.out, model_dir, cfg, input_format=args.input_format,
                                 column=args.column, out_format=args.out_format, overwrite=args.overwrite,
                                 max_len=args.max_len, log=log_line, sources=sources)
    finally:
        shutdown_if_owned(ctx)


def parser() -> argparse.ArgumentParser:
    from cemr.corpus.readers import INPUT_FORMATS

    p = build_parser("jobs.predict", __doc__, inputs=True)
    p.add_argument("--model", help="model directory written by cemr train or a round (default: the best round "
                                   "of run_dir)")
    p.add_argument("--input", action="append", default=[], metavar="PATH",
                   help="one more input file or directory (repeatable; the older spelling of a positional INPUT)")
    p.add_argument("--input-format", default="auto", choices=INPUT_FORMATS,
                   help="input format; auto (default) detects it per input; labels of a labeled format are ignored")
    p.add_argument("--column", default=None, help="text column / JSON field for text inputs")
    p.add_argument("--out", required=True,
                   help="output directory: shards part-NNNNNN.<format> (BRAT: <name>.txt/.ann, annotation.conf) and "
                        "manifest.json; never an input")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--out-format", default="jsonl", choices=OUT_FORMATS,
                   help="jsonl or parquet shards, or a BRAT directory")
    p.add_argument("--max-len", type=int, default=None,
                   help="sentence length documents are split into (default: the one the model records)")
    p.add_argument("--device", default="auto", type=job_device,
                   help="auto (default: as cluster.actor_num_gpus says), cpu, or cuda (a GPU per actor, which Ray "
                        "chooses)")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
