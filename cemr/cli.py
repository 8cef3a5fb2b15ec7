"""The ``cemr`` command line: data statistics, preparation, pretraining, training, evaluation, prediction.

The distributed self-training job is ``python -m jobs.bootstrap`` (it needs Ray); everything here runs in
one process with plain torch. Heavy modules are imported inside each command so ``cemr --help`` is fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cemr import __version__


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required, help="YAML config (default: the embedded demo)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3")


def _load(args: argparse.Namespace):
    from cemr.config import load_config

    return load_config(args.config, args.overrides)


def cmd_stats(args: argparse.Namespace) -> int:
    from cemr.corpus.stats import corpus_stats

    stats = corpus_stats(args.format, args.path)
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        print(f"{stats['format']} {stats['path']}")
        print(f"documents: {stats['documents']}")
        for t, n in stats["entities"].items():
            print(f"  {t}: {n}")
        print(f"rejected: {stats['rejected']}  repaired: {stats['repaired']}")
        for e in stats.get("errors", [])[:20]:
            print(f"  ! {e}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from cemr.prepare import prepare

    cfg = _load(args)
    out = Path(args.out or Path(cfg.run_dir) / "data")
    report = prepare(cfg, out)
    print(json.dumps(report.to_dict() if hasattr(report, "to_dict") else report, ensure_ascii=False, indent=1))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cemr.pipeline import pretrain_from_config

    cfg = _load(args)
    metrics = pretrain_from_config(cfg, Path(args.out or cfg.run_dir), device=cfg.train.device)
    print(json.dumps(metrics, ensure_ascii=False, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cemr.pipeline import train_from_config

    cfg = _load(args)
    result = train_from_config(cfg, Path(args.out or cfg.run_dir))
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cemr.pipeline import evaluate_model_dir

    report = evaluate_model_dir(args.model, args.format, args.data, device=args.device)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.to_table())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cemr.pipeline import predict_files

    n = predict_files(
        args.model, args.inputs, args.out, input_format=args.input_format, out_format=args.out_format,
        device=args.device, column=args.column,
    )
    print(json.dumps({"documents": n, "out": str(args.out)}), file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cemr.demo import generate_demo, write_demo

    corpus = generate_demo(args.documents, args.unlabeled, args.seed)
    paths = write_demo(corpus, Path(args.out))
    print(json.dumps({k: str(v) for k, v in paths.items()}, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cemr.corpus.readers import FORMATS

    ap = argparse.ArgumentParser(prog="cemr", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"cemr {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="read a corpus and count documents and entities per type")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help="raw labeled + unlabeled inputs -> train/dev/test/unlabeled Parquet shards")
    _add_config_args(p)
    p.add_argument("--out", help="output directory (default RUN_DIR/data)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="word2vec chars, BiLM and BERT (MLM) on the unlabeled corpus")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (default: the config's run_dir); writes OUT/data and OUT/pretrain")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("train", help="supervised training of the tagger (prepare + pretrain included)")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (default: the config's run_dir); the model goes to OUT/model")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="entity-level P/R/F1 of a model directory on a labeled corpus")
    p.add_argument("--model", required=True, help="model directory written by cemr train")
    p.add_argument("--format", required=True, choices=[f for f in FORMATS if f != "text"])
    p.add_argument("--data", required=True, help="file or directory in that format")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="tag documents; JSON lines with spans + confidence, or BRAT")
    p.add_argument("--model", required=True)
    p.add_argument("inputs", nargs="+", help="input files or directories")
    p.add_argument("--input-format", default="text", choices=FORMATS)
    p.add_argument("--column", help="text column / JSON field for text inputs")
    p.add_argument("--out", required=True, help="output file (jsonl) or directory (brat)")
    p.add_argument("--out-format", default="jsonl", choices=["jsonl", "brat"])
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="write the embedded synthetic demo corpus to disk")
    p.add_argument("--out", required=True)
    p.add_argument("--documents", type=int, default=240)
    p.add_argument("--unlabeled", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    from cemr.config import ConfigError
    from cemr.corpus.document import CorpusError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CorpusError, FileNotFoundError) as exc:
        print(f"cemr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
