"""BRAT standoff reader: T lines, discontinuous spans, ignored annotation kinds, id decoding."""
import pytest

from cemr.corpus import CorpusError, ReadReport, Span, read_documents
from cemr.corpus.formats.brat import parse_t_line, quote_id, unquote_id


def write(dir_, name, text, ann):
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / f"{name}.txt").write_bytes(text.encode("utf-8"))
    (dir_ / f"{name}.ann").write_bytes(ann.encode("utf-8"))


def test_reads_t_lines_and_counts_ignored_kinds(tmp_path):
    text = "患者头痛\r\n左腿疼痛"
    write(tmp_path, "doc1", text,
          "T1\t症状 2 4\t头痛\n"
          "T2\t身体部位 6 8\t左腿\n"
          "T3\t症状 1 4;6 8\t者头痛 左腿\n"
          "A1\tNegated T1\n"
          "R1\tloc Arg1:T1 Arg2:T2\n"
          "#1\tAnnotatorNotes T1\tnote\n"
          "T4\t症状 3 7\t痛\r\n左\n")  # a raw line break inside a mention: two broken lines
    report = ReadReport()
    (doc,) = read_documents("brat", tmp_path, report=report)
    assert doc.id == "doc1" and doc.text == text  # CRLF kept: offsets stay valid
    assert doc.spans == [Span(2, 4, "症状"), Span(6, 8, "身体部位")]
    assert report.reasons == {"discontinuous": 1, "ignored_brat_A": 1, "ignored_brat_R": 1,
                              "ignored_brat_#": 1, "mention_mismatch": 1, "bad_line": 1}
    disc = next(i for i in report.issues if i.line == 3)
    assert disc.path.endswith("doc1.ann") and "discontinuous" in disc.problem
    assert report.repaired == 1 and report.spans_read == 5


def test_mention_with_line_break_written_as_space(tmp_path):
    write(tmp_path, "d", "头\n痛", "T1\t症状 0 3\t头 痛\n")
    (doc,) = read_documents("brat", tmp_path)
    assert doc.spans == [Span(0, 3, "症状")]


def test_mismatch_missing_and_strict(tmp_path):
    write(tmp_path, "a", "患者头痛", "T1\t症状 2 4\t头疼\n")
    (tmp_path / "b.txt").write_text("无 ann", encoding="utf-8")
    (tmp_path / "annotation.conf").write_text("[entities]\n", encoding="utf-8")
    report = ReadReport()
    docs = list(read_documents("brat", tmp_path, report=report))
    assert [d.id for d in docs] == ["a"] and docs[0].spans == []
    assert report.reasons == {"mention_mismatch": 1, "missing_file": 1, "ignored_file": 1}
    with pytest.raises(CorpusError, match=r"a\.ann:1: .*differs"):
        list(read_documents("brat", tmp_path, strict=True))


def test_ids_are_decoded_and_nested_dirs_read(tmp_path):
    write(tmp_path, quote_id("part1:3"), "文本", "")
    write(tmp_path / "sub", "x", "文本", "")
    assert [d.id for d in read_documents("brat", tmp_path)] == ["part1:3", "sub/x"]


def test_quote_id_round_trip_and_safety():
    for doc_id in ["病史特点-1", "part1:3", "a/b\\c", ".hidden", "100%", "a b\tc", "x.y"]:
        name = quote_id(doc_id)
        assert unquote_id(name) == doc_id
        assert all(c.isalnum() or c in "-_.%" for c in name) and not name.startswith(".")
    with pytest.raises(ValueError):
        quote_id("")


def test_parse_t_line_errors():
    assert parse_t_line("T1\tA 0 2\tab") == ("A", 0, 2, "ab")
    for bad, msg in [("T1", "expected"), ("T1\tA 0\tx", "two offsets"),
                     ("T1\tA x 2\tx", "not integers"), ("T1\tA 0 1;2 3\tx", "discontinuous")]:
        with pytest.raises(ValueError, match=msg):
            parse_t_line(bad)


def test_not_a_directory(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(CorpusError, match="format brat does not fit: it looks like text"):
        list(read_documents("brat", f))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="empty directory"):
        list(read_documents("brat", empty))


def test_a_directory_written_by_write_brat_reads_back_with_its_ids_and_types(tmp_path):
    """write_brat names files readably (cemr_ids.jsonl keeps the ids it had to change) and
    stores types brat cannot (Chinese) as xn-- Punycode: the reader gives back ids and types."""
    from cemr.corpus import Document, Span, write_brat
    from cemr.corpus.brat_names import file_stem, read_id_map, storage_type

    original = [Document("subtask1_training_part1:3", "胃癌术后", [Span(0, 2, "疾病和诊断")]),
                Document("ccks2017/train/病史特点-1", "头痛", [Span(0, 2, "症状和体征")]),
                Document("Ab", "一"), Document("aB", "二", [Span(0, 1, "DRUG")])]
    write_brat(original, tmp_path)
    assert read_id_map(tmp_path)[file_stem("subtask1_training_part1:3")] == "subtask1_training_part1:3"
    assert storage_type("疾病和诊断") in (tmp_path / f"{file_stem('subtask1_training_part1:3')}.ann").read_text(
        encoding="utf-8")
    report = ReadReport()
    back = {d.id: (d.text, d.spans) for d in read_documents("brat", tmp_path, report=report, strict=True)}
    assert back == {d.id: (d.text, d.spans) for d in original}
    assert report.kept == 4 and report.reasons["ignored_file"] == 3  # annotation.conf, visual.conf, the id map
