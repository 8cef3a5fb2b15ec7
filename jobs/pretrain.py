"""``python -m jobs.pretrain [--config YAML] [key=value ...]``: prepare the data and pretrain.

Runs both stages as one Ray task (skipped when ``RUN_DIR/data`` and ``RUN_DIR/pretrain`` already
hold this config's output, refused before Ray starts when they were made from another config or
other inputs: :mod:`cemr.fingerprint`) and prints the pretraining metrics.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from jobs._common import build_parser, load_job_config, log_line, run_job


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.pipeline import RunLayout, stages_done
    from cluster.bootstrap import connect, run_stages
    from cluster.round_metrics import split_sentences
    from cluster.runtime import shutdown_if_owned

    cfg = load_job_config(args)
    layout = RunLayout.of(cfg.run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    stages_done(cfg, layout)  # a stale run directory is refused here, before Ray starts
    ctx = connect(cfg, log_line)
    try:
        stages = run_stages(cfg, layout, log_line)
    finally:
        shutdown_if_owned(ctx)
    return {"run_dir": str(layout.root), "data": str(layout.data), "pretrain_dir": str(layout.pretrain),
            "skipped": stages["skipped"], "times": stages["times"], "pretrain": stages["pretrain"],
            "sentences": split_sentences(stages["prepare"])}


def parser() -> argparse.ArgumentParser:
    return build_parser("jobs.pretrain", __doc__)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_job(main, parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
