"""Encoding detection among UTF-8, UTF-8 with BOM and GB18030."""
import pytest

from cemr.corpus.encoding import (EncodingError, detect_bytes, detect_encoding, iter_lines,
                                  read_text)

TEXT = "患者，男，65岁，因“头痛3天”入院。"


@pytest.mark.parametrize("raw, expected", [
    (TEXT.encode("utf-8"), "utf-8"),
    (b"\xef\xbb\xbf" + TEXT.encode("utf-8"), "utf-8-sig"),
    (TEXT.encode("gb18030"), "gb18030"),
    (b"plain ascii", "utf-8"),
    (b"", "utf-8"),
    (b"\xff\xff\x00\x80", None),
])
def test_detect_bytes_and_files(tmp_path, raw, expected):
    assert detect_bytes(raw) == expected
    f = tmp_path / "f"
    f.write_bytes(raw)
    assert detect_encoding(f) == expected


def test_detection_skips_a_long_ascii_prefix(tmp_path):
    f = tmp_path / "f.csv"
    f.write_bytes(b"department,title,ask\n" * 20000 + TEXT.encode("gb18030"))
    assert detect_encoding(f) == "gb18030"


def test_detection_window_may_cut_a_character(tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(("头" * 800_000).encode("utf-8"))  # far longer than the window
    assert detect_encoding(f) == "utf-8"


def test_read_text_keeps_crlf_and_strips_bom(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"\xef\xbb\xbf" + "一\r\n二".encode())
    assert read_text(f) == ("一\r\n二", "utf-8-sig")
    f.write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(EncodingError, match="line 2"):
        read_text(f)


def test_iter_lines(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"\xef\xbb\xbf" + "一\r\n".encode() + b"\xff\n" + "三".encode())
    got = [(n, t) for n, t, _ in iter_lines(f, "utf-8-sig")]
    assert got == [(1, "一"), (2, None), (3, "三")]
    assert [t for _, t, _ in iter_lines(f, "utf-8-sig", keep_ends=True)][0] == "一\r\n"
