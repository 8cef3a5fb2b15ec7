"""Text tables padded by terminal display width (wcwidth), not by code points."""
import pytest
from wcwidth import wcswidth

from cemr.textwidth import LEFT, RIGHT, display_width, format_table, pad, printable


def test_display_width_counts_terminal_columns():
    assert display_width("疾病和诊断") == 10 == wcswidth("疾病和诊断")
    assert display_width("DRUG") == 4
    assert display_width("Te\u0301te") == 4  # a combining accent takes no column
    assert display_width("a\u200bb") == 2  # nor a zero-width space
    assert display_width("（）") == 4  # full-width punctuation: 2 each
    assert display_width("a\tb") == 4 and printable("a\tb") == "a\\tb"  # a control character: its escape


def test_pad_fills_to_display_columns_and_never_cuts():
    assert pad("疾病", 6) == "疾病  " and pad("疾病", 6, RIGHT) == "  疾病"
    assert pad("疾病和诊断", 4) == "疾病和诊断"
    with pytest.raises(ValueError):
        pad("x", 3, "centre")


def test_format_table_aligns_every_column_boundary_for_mixed_scripts():
    rows = [["type", "entities", "share"], ["疾病和诊断", 1234, "0.50"], ["DRUG", 7, "0.25"],
            ["检查（实验室）", 12, "0.25"]]
    lines = format_table(rows, [LEFT, RIGHT, RIGHT], rule_after=(0,))
    assert lines[1] == "-" * 14 + "  " + "-" * 8 + "  " + "-" * 5
    body = [lines[0], *lines[2:]]
    # the right-aligned columns end in the same terminal column on every row
    ends = {(wcswidth(l[:l.rindex(str(r[1])) + len(str(r[1]))]), wcswidth(l)) for l, r in zip(body, rows)}
    assert ends == {(24, 31)}
    with pytest.raises(ValueError, match="row 1 has 2 cells"):
        format_table([["a", "b", "c"], ["x", "y"]], [LEFT, LEFT, LEFT])
