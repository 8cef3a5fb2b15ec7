"""``python -m jobs.evaluate [--model DIR] [--split dev|test | --format F --data PATH] [key=value ...]``:
entity-level evaluation (exact span and type; micro and per type P/R/F1) with Ray Data inference.

Either a prepared split of ``run_dir`` (``--split``, default ``test``: its documents whole, as
the bootstrap rounds score them) or a labeled corpus (``--format`` + ``--data``). Documents are
split as unseen text is (the model's recorded sentence length), tagged and mapped back; every
gold span is scored on document offsets. The model defaults to the best round of ``run_dir``. Prints the
table on stderr; the JSON report (also ``--out``) is the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from jobs._common import build_parser, load_job_config, log_line, run_job
from jobs.predict import best_model_dir, tag_texts


def _spans(preds: list[dict[str, Any]]):
    from cemr.corpus.document import Span

    return [Span(p["start"], p["end"], p["type"]) for p in preds]


def evaluate_split(model_dir: Path, cfg: Any, split: str):
    """Score the model on the dev or test documents of ``run_dir`` (``data/documents/``), tagged
    whole by the actors as ``cemr evaluate`` tags them, every gold span scored."""
    from cemr.metrics import evaluate
    from cemr.pipeline import RunLayout, load_documents

    layout = RunLayout.of(cfg.run_dir)
    docs = load_documents(layout, split)
    if not docs:
        raise FileNotFoundError(f"{layout.data / 'documents' / (split + '.jsonl')}: no documents "
                                f"(prepare the run first, or pass --data)")
    preds = dict(tag_texts([(d.id, d.text) for d in docs], model_dir, cfg))
    return evaluate(docs, {k: _spans(v) for k, v in preds.items()}), {"split": split, "documents": len(docs)}


def evaluate_corpus(model_dir: Path, cfg: Any, fmt: str, data: str):
    """Score the model on a labeled corpus read as ``cemr evaluate`` reads it (labels required, the
    rejection policy ``data.max_rejected`` / ``data.strict`` applied)."""
    from cemr.inference import read_labeled
    from cemr.metrics import evaluate

    docs, src = read_labeled(data, fmt, max_rejected=cfg.data.max_rejected, strict=cfg.data.strict, log=log_line)
    preds = dict(tag_texts([(d.id, d.text) for d in docs], model_dir, cfg))
    return evaluate({d.id: d.spans for d in docs}, {k: _spans(v) for k, v in preds.items()}), \
        {"data": data, "format": src.format, "documents": len(docs), "inputs": {src.path: src.summary()}}


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.bootstrap import connect
    from cluster.runtime import shutdown_if_owned

    cfg = load_job_config(args)
    if (args.format is None) != (args.data is None):
        raise ValueError("--format and --data go together")
    model_dir = Path(args.model) if args.model else best_model_dir(cfg.run_dir)
    ctx = connect(cfg, log_line)
    try:
        if args.data:
            report, about = evaluate_corpus(model_dir, cfg, args.format, args.data)
        else:
            report, about = evaluate_split(model_dir, cfg, args.split)
    finally:
        shutdown_if_owned(ctx)
    log_line(report.to_table())
    out = {"model": str(model_dir), **about, **report.to_dict()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


def parser() -> argparse.ArgumentParser:
    p = build_parser("jobs.evaluate", __doc__)
    p.add_argument("--model", help="model directory (default: the best round of run_dir)")
    p.add_argument("--split", default="test", choices=("dev", "test"), help="prepared split of run_dir")
    p.add_argument("--format", default=None, help="format of --data (ccks2017, yidu, jsonl, brat, ...; "
                                                   "required with --data)")
    p.add_argument("--data", default=None, help="labeled corpus to evaluate on instead of a split")
    p.add_argument("--out", default=None, help="also write the JSON report here (not given: stdout only)")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
