"""Progress bars and informational lines on standard error; results alone on standard output.

One small layer over tqdm that every long step uses:

- :func:`progress`: a tqdm bar on ``sys.stderr`` (looked up at each call, so a redirected stderr is
  honoured). It is disabled, a no-op with the same ``update`` / ``set_postfix`` / ``close`` API that
  still iterates its iterable, when stderr is not a terminal (a pipe, a file, a Ray worker, pytest;
  ``CEMR_PROGRESS=1`` draws them there too, e.g. into a CI log), after ``set_quiet(True)``
  (``cemr --quiet``), or with ``CEMR_QUIET=1`` in the environment (quiet wins). Bars are transient
  (``leave=False``): the lines a step prints stay, the bars do not.
- :func:`say`: one informational line on stderr (``cemr``'s log lines: detected formats, per-epoch
  figures). Silenced by quiet, except lines starting with ``warning:``, which always print.
  Printed through ``tqdm.write``, so a line never breaks a bar that is being drawn.
- :func:`write`: text on any stream (``cemr predict --out -`` lines on stdout) without breaking a bar
  drawn on the same terminal; flushed, so a reader of the pipe sees each line at once.

tqdm's own environment variables (``TQDM_MININTERVAL``, ``TQDM_NCOLS``, ...) still apply.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

QUIET_ENV = "CEMR_QUIET"
PROGRESS_ENV = "CEMR_PROGRESS"
WARNING_PREFIX = "warning:"

_quiet = False


def set_quiet(flag: bool) -> bool:
    """Silence (``True``) or restore bars and informational lines for this process; returns the
    previous setting (so a caller can put it back)."""
    global _quiet
    previous, _quiet = _quiet, bool(flag)
    return previous


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def quiet() -> bool:
    """True after ``set_quiet(True)`` or with ``CEMR_QUIET`` set to anything but ``""`` / ``0``."""
    return _quiet or _env_on(QUIET_ENV)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def enabled(stream: Any = None) -> bool:
    """Whether bars are drawn on ``stream`` (default: the current ``sys.stderr``): not quiet, and a
    terminal or ``CEMR_PROGRESS`` set (to anything but ``""`` / ``0``)."""
    return not quiet() and (_env_on(PROGRESS_ENV) or _is_tty(sys.stderr if stream is None else stream))


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str, unit: str = "it",
             unit_scale: bool = False, leave: bool = False, file: IO[str] | None = None) -> tqdm:
    """A progress bar on stderr (or ``file``), disabled as the module notes say.

    Use it around a loop (``for batch in progress(batches, desc="bilm epoch 1/3", unit="batch")``) or
    by hand (``bar = progress(total=n_chars, desc="predict", unit="char", unit_scale=True)``, then
    ``bar.update(k)``, ``bar.set_postfix(loss=...)`` and ``bar.close()``; also a context manager).
    ``total`` defaults to ``len(iterable)`` when it has one; None shows a count and a rate.
    """
    stream = sys.stderr if file is None else file
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                file=stream, disable=not enabled(stream), dynamic_ncols=True)


def say(msg: str) -> None:
    """One informational line on stderr; silenced by quiet unless it starts with ``warning:``."""
    if quiet() and not msg.startswith(WARNING_PREFIX):
        return
    write(msg + "\n", sys.stderr)


def write(text: str, fh: IO[str]) -> None:
    """``text`` to ``fh``, the bars being drawn cleared first and redrawn after; flushed."""
    with tqdm.external_write_mode(file=fh):
        fh.write(text)
    fh.flush()
