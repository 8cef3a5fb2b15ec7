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


@pytest.mark.parametrize("codec, bom, name", [("utf-16-le", b"\xff\xfe", "utf-16-le"),
                                              ("utf-16-be", b"\xfe\xff", "utf-16-be")])
def test_utf16_with_bom_is_read(tmp_path, codec, bom, name):
    # "上" is U+4E0A: its UTF-16 bytes hold 0x0A, which must not split a line
    text = "患者上腹痛\r\n\n胃癌术后\n"
    f = tmp_path / "u16.txt"
    f.write_bytes(bom + text.encode(codec))
    assert detect_encoding(f) == name
    assert read_text(f) == (text, name)
    assert [(n, t) for n, t, _ in iter_lines(f, name)] == [(1, "患者上腹痛"), (2, ""), (3, "胃癌术后")]
    from cemr.corpus import ReadReport, read_unlabeled
    report = ReadReport()
    assert [d.text for d in read_unlabeled(f, report=report)] == ["患者上腹痛", "胃癌术后"]
    assert report.encodings == {name: 1}


def test_utf16_bad_sequence_is_one_bad_line(tmp_path):
    f = tmp_path / "u16.txt"
    f.write_bytes(b"\xff\xfe" + "一\n".encode("utf-16-le") + b"\x00\xd8" + "\n三".encode("utf-16-le"))
    assert [(n, t) for n, t, _ in iter_lines(f, "utf-16-le")] == [(1, "一"), (2, None), (3, "三")]


def test_binary_content_is_recognised(tmp_path):
    import random

    from cemr.corpus.encoding import BinaryFileError, binary_problem, file_encoding

    rng = random.Random(0)
    blob = bytes(rng.randrange(256) for _ in range(8192))
    assert "NUL byte" in binary_problem(blob)
    controls = bytes(rng.choice(b"\x01\x02\x03\x04\x05\x06abc") for _ in range(4000))
    assert "control characters" in binary_problem(controls)
    assert binary_problem(TEXT.encode("gb18030") * 50) is None
    assert binary_problem(b"\xff\xfe" + TEXT.encode("utf-16-le")) is None  # NULs, but UTF-16
    f = tmp_path / "x.txt"
    f.write_bytes(blob)
    with pytest.raises(BinaryFileError, match="binary content"):
        file_encoding(f)
    with pytest.raises(BinaryFileError, match="binary content"):
        read_text(f)
