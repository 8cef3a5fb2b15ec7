"""The ``cemr`` command line: data statistics, preparation, pretraining, training, evaluation, prediction.

The distributed self-training job is ``python -m jobs.bootstrap`` (it needs Ray); everything here runs in
one process with plain torch. Heavy modules are imported inside each command so ``cemr --help`` is fast.
Results go to stdout (one JSON document where a report is promised); progress bars and log lines go to
stderr through :mod:`cemr.progress` (``-q/--quiet`` silences both, errors and warnings excepted).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cemr import __version__
from cemr.progress import say, set_quiet


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with ``(default: X)`` when it has a default to show: not for a flag
    (``--json``: its help says what it turns on) nor for a default of None (the help says what
    happens when the option is not given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


QUIET_HELP = ("no progress bars nor informational lines on stderr (errors and warnings still print); "
              "also CEMR_QUIET=1. Bars are drawn only when stderr is a terminal (CEMR_PROGRESS=1: always)")


def _quiet_parent() -> argparse.ArgumentParser:
    """``-q/--quiet`` accepted after the subcommand too (``cemr predict -q ...``); SUPPRESS leaves the
    value ``cemr -q predict`` set untouched when the subcommand does not repeat it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    return parent


def _add_command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                          parents=[_quiet_parent()])


DEVICE_HELP = "auto (cuda when torch sees one, else cpu), cpu, cuda or cuda:N: as train.device"


def _device(value: str) -> str:
    """``--device``: a value ``train.device`` takes, checked when the command line is read (the
    device itself is resolved by :func:`cemr.training.resolve_device`, as ``train.device`` is)."""
    import re

    from cemr.config import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r}: unknown device; use auto, cpu, cuda or cuda:N (as train.device)")
    return value


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required,
                   help="YAML config (default: none, the built-in defaults of docs/config.md: the synthetic demo corpus "
                        "with all of its gold; the jobs' default, ray_configs/experiments/demo.yaml, is its "
                        "low-resource variant with a test split)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides applied after the file, e.g. train.epochs=3 (docs/config.md lists "
                        "every key)")


def _log(msg: str) -> None:
    """An informational line on stderr (silenced by --quiet, warnings excepted)."""
    say(msg)


def _load(args: argparse.Namespace):
    from cemr.config import load_config

    return load_config(args.config, args.overrides)


def cmd_stats(args: argparse.Namespace) -> int:
    from cemr.corpus.stats import corpus_stats

    stats = corpus_stats(args.format, args.path)
    if stats.get("detected"):
        _log(f"{args.path}: {stats['detected']}")
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        print(f"{stats['format']} {stats['path']}")
        print(f"documents: {stats['documents']}")
        from cemr.textwidth import LEFT, RIGHT, format_table

        for line in format_table([["type", "entities"], *stats["entities"].items()], [LEFT, RIGHT], rule_after=(0,)):
            print(f"  {line}")  # padded by display width: Chinese type names stay aligned
        print(f"rejected: {stats['rejected']}  repaired: {stats['repaired']}")
        for e in stats.get("errors", [])[:20]:
            print(f"  ! {e}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from cemr.pipeline import prepare_dir

    cfg = _load(args)
    out = Path(args.out or Path(cfg.run_dir) / "data")
    report = prepare_dir(cfg, out, log=_log)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cemr.pipeline import pretrain_from_config

    cfg = _load(args)
    metrics = pretrain_from_config(cfg, Path(args.out or cfg.run_dir), device=cfg.train.device, log=_log)
    print(json.dumps(metrics, ensure_ascii=False, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cemr.pipeline import train_from_config

    cfg = _load(args)
    result = train_from_config(cfg, Path(args.out or cfg.run_dir), log=_log)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cemr.inference import evaluate_model_dir

    result = evaluate_model_dir(args.model, args.format, args.data, device=args.device, max_len=args.max_len,
                                max_rejected=args.max_rejected, strict=args.strict)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(result.report.to_table())
        d = result.data
        print(f"documents read {d['read']}, kept {d['kept']}, rejected {d['rejected']}; "
              f"gold spans read {d['spans_read']}, dropped {d['spans_dropped']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cemr.inference import predict_files

    summary = predict_files(
        args.model, args.inputs, args.out, input_format=args.input_format, out_format=args.out_format,
        device=args.device, column=args.column, overwrite=args.overwrite, max_len=args.max_len,
        low_confidence=args.low_confidence, precision=args.precision,
    )
    brief = {"documents": summary["documents"], "out": summary["out"],
             "inputs": {k: {n: v[n] for n in ("format", "read", "kept", "rejected", "reasons")}
                        for k, v in summary["inputs"].items()}}
    _log(json.dumps(brief, ensure_ascii=False))
    return 0


def _types(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def cmd_review_export(args: argparse.Namespace) -> int:
    from cemr.review.export import export_review

    summary = export_review(args.out, args.format, round_dir=args.round_dir, predictions=args.predictions,
                            limit=args.limit, threshold=args.threshold, model=args.model, device=args.device,
                            types=_types(args.types), overwrite=args.overwrite)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def cmd_review_import(args: argparse.Namespace) -> int:
    from cemr.outputs import check_output
    from cemr.review.imports import import_reviewed

    check_output(args.out, [args.path], overwrite=args.overwrite)
    summary = import_reviewed(args.format, args.path, args.out, types=set(_types(args.types)) or None,
                              overlap_policy=args.overlap_policy, max_rejected=args.max_rejected,
                              strict=args.strict)
    data = summary["data"]
    _log(f"{args.path}: {data['read']} task(s) read, {data['kept']} kept, {data['rejected']} rejected "
         f"({summary['not_reviewed']} not reviewed yet); {data['spans_kept']} entities kept, "
         f"{data['spans_dropped']} dropped")
    print(json.dumps(summary if args.json else {k: v for k, v in summary.items() if k != "data"},
                     ensure_ascii=False, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cemr.demo import demo_corpus, write_demo

    corpus = demo_corpus(args.corpus, args.documents, args.unlabeled, args.seed)
    paths = write_demo(corpus, Path(args.out), overwrite=args.overwrite)
    print(json.dumps({k: str(v) for k, v in paths.items()}, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cemr.config import PREDICTOR_PRECISIONS
    from cemr.corpus.readers import INPUT_FORMATS

    ap = argparse.ArgumentParser(prog="cemr", description=__doc__.splitlines()[0].replace("``", ""),
                                 formatter_class=HelpFormatter,
                                 epilog="Results go to stdout (JSON where a report is promised), progress bars "
                                        "and log lines to stderr. `cemr COMMAND --help` shows each command's "
                                        "options with their defaults.")
    ap.add_argument("--version", action="version", version=f"cemr {__version__}")
    ap.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add_command(sub, "stats", "read a corpus and count documents and entities per type")
    p.add_argument("--format", default="auto", choices=INPUT_FORMATS,
                   help="corpus format; auto detects it from the data (and prints what it found)")
    p.add_argument("path", help="corpus file or directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_stats)

    p = _add_command(sub, "prepare", "raw labeled + unlabeled inputs -> train/dev/test/unlabeled Parquet shards "
                                     "(prints the report as JSON)")
    _add_config_args(p)
    p.add_argument("--out", help="output directory (default: RUN_DIR/data, RUN_DIR the config's run_dir)")
    p.set_defaults(func=cmd_prepare)

    p = _add_command(sub, "pretrain", "word2vec chars, BiLM, BERT (MLM) and, if enabled, bigram vectors on the "
                                      "unlabeled corpus (prints the metrics as JSON)")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (default: the config's run_dir); writes OUT/data and OUT/pretrain")
    p.set_defaults(func=cmd_pretrain)

    p = _add_command(sub, "train", "supervised training of the tagger, prepare + pretrain included "
                                   "(prints the report as JSON)")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (default: the config's run_dir); the model goes to OUT/model")
    p.set_defaults(func=cmd_train)

    p = _add_command(sub, "evaluate", "entity-level P/R/F1 of a model directory on a labeled corpus")
    p.add_argument("--model", required=True, action="append",
                   help="model directory written by cemr train (RUN_DIR/model); repeated: the seed ensemble of "
                        "those models (same config and run layout; averaged CRF scores, cemr.ensemble)")
    p.add_argument("--format", default="auto", choices=[f for f in INPUT_FORMATS if f != "text"],
                   help="labeled corpus format; auto detects it from the data")
    p.add_argument("--data", required=True, help="file or directory in that format")
    p.add_argument("--device", default="auto", type=_device, help=DEVICE_HELP)
    p.add_argument("--max-len", type=int, default=None,
                   help="sentence length documents are split into (default: the one the model records)")
    p.add_argument("--max-rejected", type=float, default=0.0,
                   help="fraction of the corpus's records the reader may reject before evaluation stops")
    p.add_argument("--strict", action="store_true",
                   help="any rejected record, or entity types differing between model and data, is an error")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
    p.set_defaults(func=cmd_evaluate)

    p = _add_command(sub, "predict", "tag documents; JSON lines with spans + confidence, BRAT or an HTML page "
                                     "(the summary goes to stderr)")
    p.add_argument("--model", required=True, action="append",
                   help="model directory written by cemr train (RUN_DIR/model); repeated: the seed ensemble of "
                        "those models (same config and run layout; averaged CRF scores, cemr.ensemble)")
    p.add_argument("inputs", nargs="+", help="input files or directories; - reads standard input")
    p.add_argument("--input-format", default="auto", choices=INPUT_FORMATS,
                   help="input format; auto detects it per input (labels of a labeled format are ignored)")
    p.add_argument("--column", help="text inputs: the JSON field or CSV/TSV column holding the text, a header name or "
                                    "a 0-based index (default: text, else originalText)")
    p.add_argument("--out", required=True,
                   help="output file (jsonl; - writes standard output, one line per document as soon as it is "
                        "tagged) or directory (brat); never an input. Files and directories appear complete or "
                        "not at all")
    p.add_argument("--out-format", default="jsonl", choices=["jsonl", "brat", "html"],
                   help="output format; html: one self-contained page, entities highlighted by type")
    p.add_argument("--low-confidence", type=float, default=0.7,
                   help="html: entities below this confidence are marked (dashed, '?')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--max-len", type=int, default=None,
                   help="sentence length documents are split into (default: the one the model records)")
    p.add_argument("--device", default="auto", type=_device, help=DEVICE_HELP)
    p.add_argument("--precision", default="fp32", choices=PREDICTOR_PRECISIONS,
                   help="fp32 exact; bf16, int8 (CPU only) and bf16-int8 are faster, not exact, and may change a few "
                        "spans (cemr.predictor.set_precision; benchmarks/bench_predictor.py --precision measures them)")
    p.set_defaults(func=cmd_predict)

    _add_review_parser(sub)

    p = _add_command(sub, "demo", "write synthetic demo documents to disk (labeled JSON lines + unlabeled text; "
                                  "prints the paths as JSON): by default new ones, none of whose texts the demo "
                                  "experiment trains on, to predict on or score a demo model with")
    p.add_argument("--out", required=True, help="directory to write the corpus files into")
    p.add_argument("--corpus", default="new", choices=["new", "training"],
                   help="new: documents kept apart from the demo experiment's training corpus (no text equal to or "
                        "inside one of its texts); training: the training corpus --documents/--unlabeled/--seed "
                        "draw (with the defaults, the one the demo experiment trains on)")
    p.add_argument("--documents", type=int, default=240, help="labeled documents to generate")
    p.add_argument("--unlabeled", type=int, default=2000, help="unlabeled documents to generate")
    p.add_argument("--seed", type=int, default=7, help="random seed of the generator (same seed, same corpus)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out directory")
    p.set_defaults(func=cmd_demo)
    return ap


def _add_review_parser(sub: argparse._SubParsersAction) -> None:
    review = _add_command(sub, "review", "the review loop: export what the model is least sure of to an "
                                         "annotation tool, import the reviewed annotations as gold")
    rsub = review.add_subparsers(dest="review_command", required=True, metavar="SUBCOMMAND")

    p = _add_command(rsub, "export", "below-threshold sentences, most uncertain first, deduplicated, with the "
                                     "model's predictions as pre-annotations -> Label Studio / doccano / BRAT tasks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--round-dir", help="a self-training round (RUN_DIR/rounds/round_NNN): its pseudo/all shards")
    src.add_argument("--predictions", help="a cemr predict JSON-lines output (records with an entity below "
                                           "--threshold)")
    p.add_argument("--out", required=True, help="tasks file (labelstudio: JSON, plus OUT.label_config.xml beside "
                                                "it; doccano: JSON lines) or directory (brat)")
    p.add_argument("--format", default="labelstudio", choices=["labelstudio", "doccano", "brat"],
                   help="annotation tool the tasks are for")
    p.add_argument("--limit", type=int, default=200, help="most tasks to export (the most uncertain)")
    p.add_argument("--threshold", type=float, default=0.7,
                   help="--predictions: a record is exported when an entity's confidence is below this")
    p.add_argument("--model", help="model directory whose predictions pre-annotate the tasks when the round's "
                                   "shards keep none (the model that pseudo-labeled the round); also gives the "
                                   "entity types")
    p.add_argument("--types", help="comma-separated entity types of the labeling config; none given: the model's, "
                                   "else those predicted")
    p.add_argument("--device", default="auto", type=_device, help=DEVICE_HELP + " (with --model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_review_export)

    p = _add_command(rsub, "import", "reviewed annotations (Label Studio JSON export, doccano JSON lines, BRAT) "
                                     "-> cemr JSON lines gold, provenance in meta.review")
    p.add_argument("--format", required=True, choices=["labelstudio", "doccano", "brat"],
                   help="what the annotation tool exported")
    p.add_argument("path", help="the export file (labelstudio, doccano) or directory (brat, doccano)")
    p.add_argument("--out", required=True, help="cemr JSON-lines file to write (data.train can read it)")
    p.add_argument("--types", help="comma-separated allowed entity types (others are dropped and counted); "
                                   "none given: any type")
    p.add_argument("--overlap-policy", default="keep_longest", choices=["keep_longest", "keep_first", "error"],
                   help="what to do with overlapping annotations")
    p.add_argument("--max-rejected", type=float, default=0.0,
                   help="fraction of the reviewed tasks that may be rejected before the import stops (tasks "
                        "not reviewed yet do not count)")
    p.add_argument("--strict", action="store_true", help="any rejected reviewed task is an error")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true", help="print the reader's whole accounting too")
    p.set_defaults(func=cmd_review_import)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input, config, output or model directory: printed as one line
    (exit status 2), never a traceback. ``cemr.modeldir`` (torch) is looked up only if loaded."""
    from cemr.config import ConfigError
    from cemr.corpus.document import CorpusError
    from cemr.outputs import OutputError

    errors: list[type[BaseException]] = [ConfigError, CorpusError, OutputError, FileNotFoundError]
    modeldir = sys.modules.get("cemr.modeldir")
    if modeldir is not None:
        errors.append(modeldir.ModelDirError)
    ensemble = sys.modules.get("cemr.ensemble")
    if ensemble is not None:
        errors.append(ensemble.EnsembleError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = set_quiet(True) if args.quiet else None
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # stdout closed early (``| head``): not an error of the command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"cemr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            set_quiet(previous)


if __name__ == "__main__":
    sys.exit(main())
