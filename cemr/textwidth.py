"""Terminal display width of text, and text tables padded by it (CJK type names stay aligned).

A wide character (``疾病和诊断``: 2 columns each) and a combining or zero-width one (0 columns)
take the columns a terminal gives them (:func:`wcwidth.wcwidth`), not one per code point, so
padding with ``str.ljust`` would misalign every column after a Chinese cell. Control characters
(a tab in a type name, say) are shown escaped (``\\t``) rather than moving the cursor.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from wcwidth import wcwidth

LEFT, RIGHT = "left", "right"


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide and full-width characters count 2, combining and
    zero-width ones 0 (:func:`wcwidth.wcwidth`); a control character counts as its escape."""
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    w = wcwidth(ch)
    return w if w >= 0 else len(_escape(ch))


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\t``, ``\\x1b``): one line, no cursor moves."""
    return "".join(ch if wcwidth(ch) >= 0 else _escape(ch) for ch in text)


def pad(text: str, width: int, align: str = LEFT) -> str:
    """``text`` padded with spaces to ``width`` display columns (never cut), on the right
    (``align="left"``) or on the left (``"right"``)."""
    if align not in (LEFT, RIGHT):
        raise ValueError(f"align {align!r}: expected {LEFT!r} or {RIGHT!r}")
    fill = " " * max(0, width - display_width(text))
    return text + fill if align == LEFT else fill + text


def format_table(rows: Sequence[Sequence[object]], align: Sequence[str], *, sep: str = "  ",
                 rule_after: Iterable[int] = ()) -> list[str]:
    """The lines of a text table: each cell ``str()``-ed (control characters escaped), every
    column as wide as its widest cell in display columns, cells padded by :func:`pad` with
    ``align[c]`` per column, joined by ``sep``; trailing spaces removed. After the row indices in
    ``rule_after`` comes a rule of dashes under each column.

    >>> print("\\n".join(format_table([["type", "n"], ["疾病和诊断", 3], ["DRUG", 12]], ["left", "right"])))
    type         n
    疾病和诊断   3
    DRUG        12
    """
    cells = [[printable(str(c)) for c in row] for row in rows]
    ncols = len(align)
    for k, row in enumerate(cells):
        if len(row) != ncols:
            raise ValueError(f"row {k} has {len(row)} cells, the table {ncols} columns")
    widths = [max((display_width(row[c]) for row in cells), default=0) for c in range(ncols)]
    rules = set(rule_after)
    lines = []
    for k, row in enumerate(cells):
        lines.append(sep.join(pad(cell, w, a) for cell, w, a in zip(row, widths, align)).rstrip())
        if k in rules:
            lines.append(sep.join("-" * w for w in widths))
    return lines
