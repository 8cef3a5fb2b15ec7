"""What every job entry point shares: arguments, config loading, termination, the JSON last line.

Every job takes ``--config PATH`` (default: the demo experiment), ``key=value`` overrides
(``train.epochs=3``, parsed as YAML) and, where it makes sense, ``--resume``. A job that reads
inputs (``jobs.predict``) takes them as ``cemr predict`` does, as positional paths, mixed with the
overrides: an argument ``dotted.key=value`` that is not an existing path is an override
(:func:`split_inputs`). A job runs locally (joining ``RAY_ADDRESS`` / ``cluster.address`` or
starting a local Ray instance) or under
``ray job submit --working-dir . -- python -m jobs.<name> ...``; under a job submission give an
absolute ``run_dir`` on storage every node sees (a relative one lands in the job's temporary copy
of the working directory).

``ray job stop`` sends SIGTERM: it is turned into :class:`JobTerminated` (a ``SystemExit``), so
``finally`` blocks run (the MLflow run is marked KILLED, Ray is left cleanly). The last line a job
prints is one JSON object (its summary), so scripts and tests can read it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from cemr.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "ray_configs" / "experiments" / "demo.yaml"

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TERMINATED = 0, 1, 2, 143


class JobTerminated(SystemExit):
    """The job received SIGTERM (``ray job stop``)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise JobTerminated(EXIT_TERMINATED)


OVERRIDE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


def split_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(inputs, overrides)`` of positional arguments, each list in the order given: an item
    ``dotted.key=value`` is a config override unless a file or directory of that name exists
    (``./a=b.txt`` is always a path)."""
    inputs, overrides = [], []
    for item in items:
        (overrides if OVERRIDE_RE.match(item) and not os.path.exists(item) else inputs).append(item)
    return inputs, overrides


class InputsParser(argparse.ArgumentParser):
    """A job parser whose positional arguments are inputs and ``key=value`` overrides mixed
    (:func:`split_inputs`): after parsing, ``inputs`` holds the inputs (the positional ones, then
    those of the older ``--input``), ``overrides`` the overrides. No input, or ``-`` (standard
    input, which Ray tasks on other nodes cannot read), is a usage error (exit 2)."""

    def parse_intermixed_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        ns = super().parse_intermixed_args(args, namespace)
        ns.inputs, ns.overrides = split_inputs(ns.items)
        ns.inputs += list(getattr(ns, "input", None) or [])
        if not ns.inputs:
            self.error("give at least one INPUT (a file or directory)")
        if "-" in ns.inputs:
            self.error("'-' (standard input): the inputs are read by Ray tasks, possibly on other nodes; write it "
                       "to a file on storage every node sees and give that")
        return ns


class JobHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """The module docstring as written, and every option's default shown as ``cemr``'s commands show
    it (:class:`cemr.cli.HelpFormatter`)."""


def build_parser(prog: str, description: str, *, resume: bool = False, config: bool = True,
                 inputs: bool = False) -> argparse.ArgumentParser:
    """A parser with ``--config`` and ``key=value`` overrides (and ``--resume`` when asked);
    ``inputs``: an :class:`InputsParser`, its positional arguments inputs and overrides mixed."""
    cls = InputsParser if inputs else argparse.ArgumentParser
    p = cls(prog=prog, description=description, formatter_class=JobHelpFormatter)
    if config:
        p.add_argument("--config", default=None,
                       help=f"experiment YAML (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
        if inputs:
            p.add_argument("items", nargs="*", metavar="INPUT | KEY=VALUE",
                           help="input files or directories (as cemr predict takes them), and config overrides, "
                                "e.g. cluster.actors=4 (an argument key=value that is not an existing path)")
        else:
            p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                           help="config overrides, e.g. train.epochs=3 selftrain.threshold=0.6")
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="continue the run in run_dir from its last completed round")
    return p


def load_job_config(args: argparse.Namespace):
    """The config of ``--config`` (default: the demo experiment) with the overrides applied."""
    from cemr.config import load_config

    path = args.config if args.config is not None else DEFAULT_CONFIG
    return load_config(path, list(getattr(args, "overrides", []) or []))


def log_line(msg: str) -> None:
    """One log line on stderr that never breaks a progress bar (:func:`cemr.progress.say`)."""
    from cemr.progress import say

    say(msg)


def run_job(main: Callable[[argparse.Namespace], dict[str, Any]], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``main(args)`` and print its summary as the last line (JSON).

    Exit codes: 0 done, 1 failed (the error on stderr), 2 bad config or arguments (a
    :class:`cemr.config.ConfigError`, which includes a run directory whose stages were made from
    another config, :class:`cemr.fingerprint.StaleStageError`, and ``--resume`` with keys that may
    not change, ``cluster.bootstrap.ResumeConfigError``) or bad input, output or model directory
    (:func:`cemr.cli.user_errors`: a corpus that does not fit its format, an output that is an
    input, a damaged model directory, a missing file), 143 terminated.
    """
    from cemr.cli import user_errors
    from cemr.config import ConfigError

    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=os.environ.get("CEMR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = main(args)
    except ConfigError as exc:
        print(f"{parser.prog}: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except user_errors() as exc:  # bad input, output or model directory: one line, no traceback
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobTerminated:
        print(f"{parser.prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # noqa: BLE001 - the job's last words, then a failing exit code
        traceback.print_exc()
        print(f"{parser.prog}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps(summary, ensure_ascii=False, default=str), flush=True)
    return EXIT_OK
