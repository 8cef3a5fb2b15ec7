"""``python -m jobs.train [--config YAML] [--resume] [key=value ...]``: supervised training only.

Round 0 of the bootstrap (gold training data, Ray Train), with the same stages, evaluation and
MLflow tracking: a bootstrap run with ``selftrain.max_rounds=0``. The model is
``RUN_DIR/rounds/round_000/model``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

from jobs._common import build_parser, load_job_config, log_line, run_job


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.bootstrap import run_bootstrap

    cfg = load_job_config(args)
    cfg = dataclasses.replace(cfg, selftrain=dataclasses.replace(cfg.selftrain, max_rounds=0))
    return run_bootstrap(cfg, resume=args.resume, log=log_line, kind="train").to_dict()


def parser() -> argparse.ArgumentParser:
    return build_parser("jobs.train", __doc__, resume=True)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
