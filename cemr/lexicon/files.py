"""Reading the UTF-8 line files of a lexicon: term lists, stop-word lists, saved lexicons."""
from __future__ import annotations

from cemr.corpus.document import CorpusError


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 file (a leading BOM dropped, CR/LF stripped). Raises CorpusError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CorpusError(path, None, f"cannot read lexicon file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusError(path, line, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]
