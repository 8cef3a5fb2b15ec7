"""``python -m jobs.sweep [--config YAML] [--resume] [key=value ...]``: the confidence-threshold sweep.

One bootstrap per threshold ``sweep.start, start + step, ..., sweep.stop`` (the paper sweeps
0.1..1.0 by 0.1), each in ``RUN_DIR/threshold_<t>`` and as a nested MLflow run under one sweep
run; data, pretraining and the gold-only round 0 are shared (``RUN_DIR/base``). The sweep run gets
the F1-vs-threshold plot and the best threshold's model (registered). ``--resume`` skips finished
thresholds and continues the others. See :mod:`cluster.sweep`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from jobs._common import build_parser, load_job_config, log_line, run_job


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.sweep import run_sweep

    return run_sweep(load_job_config(args), resume=args.resume, log=log_line)


def parser() -> argparse.ArgumentParser:
    return build_parser("jobs.sweep", __doc__, resume=True)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
