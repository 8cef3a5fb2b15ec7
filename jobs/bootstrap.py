"""``python -m jobs.bootstrap [--config YAML] [--resume] [key=value ...]``: the self-training run.

Prepares the data, pretrains, trains round 0 on gold with Ray Train, then pseudo-labels and
retrains round after round (see :mod:`cluster.bootstrap`); everything is tracked in one MLflow run.
``--resume`` continues ``run_dir`` from its last completed round.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from jobs._common import build_parser, load_job_config, log_line, run_job


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.bootstrap import run_bootstrap

    cfg = load_job_config(args)
    return run_bootstrap(cfg, resume=args.resume, log=log_line).to_dict()


def parser() -> argparse.ArgumentParser:
    return build_parser("jobs.bootstrap", __doc__, resume=True)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
