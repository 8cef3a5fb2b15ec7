"""Writing outputs safely: complete or not at all, never over an input, replaced only when asked.

Every file or directory cemr writes (predictions, shards, reports, markers, model directories) goes
through here:

- :func:`atomic_open` / :func:`atomic_write_text`: the content goes to a temporary file in the
  target's directory, is flushed and fsynced, then renamed over the target. A reader (or a crash)
  sees the old file or the new one, never half of one; a failure while writing leaves no file.
- :func:`atomic_dir`: a directory is built under a temporary sibling and renamed into place.
- :func:`check_output`: refuses, before anything is opened for writing, an output that resolves to
  one of the inputs (or lies inside an input directory, or contains an input), and an existing
  output unless ``overwrite`` is set.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


class OutputError(ValueError):
    """An output that cannot be written as asked (it is an input, it exists, ...)."""


STDIO = "-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode``: ``"w"`` (text, ``encoding``) or ``"wb"``. On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        kwargs: dict[str, Any] = {"encoding": encoding} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    with atomic_open(path, "wb", encoding=None, fsync=fsync) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on a clean exit it becomes ``path``.

    An existing ``path`` is refused (:class:`OutputError`) unless ``overwrite``; then it is replaced
    only once the new directory is complete. On an exception the temporary directory is removed.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "old")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                 overwrite: bool = False, kind: str = "file") -> None:
    """Refuse an output before anything is opened for writing.

    - ``out`` is one of ``inputs``, lies inside an input directory, or (a directory output)
      contains an input: always refused, ``--overwrite`` or not.
    - ``out`` exists: refused unless ``overwrite``; ``kind`` (``file`` or ``dir``) must match what
      is there.
    ``-`` (standard input / output) is never checked against the file system.
    """
    if str(out) == STDIO:
        return
    target = _resolved(out)
    for inp in inputs:
        if str(inp) == STDIO:
            continue
        src = _resolved(inp)
        if target == src or _is_within(target, src) or (kind == "dir" and _is_within(src, target)):
            raise OutputError(f"{out}: the output would overwrite the input {inp}; choose another --out")
    if not target.exists() and not target.is_symlink():
        return
    if kind == "file" and target.is_dir():
        raise OutputError(f"{out}: is a directory; --out names a file for this output format")
    if kind == "dir" and not target.is_dir():
        raise OutputError(f"{out}: exists and is a file; --out names a directory for this output format")
    if not overwrite:
        raise OutputError(f"{out}: already exists (pass --overwrite to replace it)")
