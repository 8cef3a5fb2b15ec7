"""CCKS2017 reader: tiny hand-made directories (CRLF, end-inclusive offsets, broken lines) and
the exact totals of the shared training set."""
from pathlib import Path

import pytest

from cemr.config import data_dir
from cemr.corpus import CorpusError, ReadReport, Span, corpus_stats, read_documents

ROOT = Path(__file__).resolve().parents[2]


def shared(*parts):
    base = Path(data_dir())
    return (base if base.is_absolute() else ROOT / base).joinpath(*parts)


def write_doc(section_dir: Path, stem: str, text: str, ann_lines, *, encoding="utf-8"):
    section_dir.mkdir(parents=True, exist_ok=True)
    (section_dir / f"{stem}.txtoriginal.txt").write_bytes(text.encode(encoding))
    ann = "".join(line + "\r\n" for line in ann_lines)  # CRLF, as in the real files
    (section_dir / f"{stem}.txt").write_bytes(ann.encode(encoding))


@pytest.fixture
def dataset(tmp_path):
    train = tmp_path / "ds" / "train"
    write_doc(train / "病史特点", "病史特点-2", "患者头痛三天，左腿疼痛。",
              ["头痛\t2\t3\t症状和体征", "左腿\t7\t8\t身体部位"])
    write_doc(train / "病史特点", "病史特点-10", "查血常规。", ["血常规\t1\t3\t检查和检验"])
    write_doc(train / "一般项目", "一般项目-2", "男性，65岁。", [])
    return tmp_path / "ds"


def test_reads_dataset_dir_and_train_dir_alike(dataset):
    a = list(read_documents("ccks2017", dataset))
    b = list(read_documents("ccks2017", dataset / "train"))
    assert [d.id for d in a] == [d.id for d in b] == ["一般项目-2", "病史特点-2", "病史特点-10"]
    doc = a[1]
    assert doc.spans == [Span(2, 4, "症状和体征"), Span(7, 9, "身体部位")]  # end inclusive -> exclusive
    assert [doc.mention(s) for s in doc.spans] == ["头痛", "左腿"]
    assert doc.meta == {"section": "病史特点", "record": "2"}
    assert doc.source.endswith("病史特点-2.txtoriginal.txt")
    assert a[0].spans == []


def test_numeric_order_within_a_section(tmp_path):
    for i in (10, 9, 100):
        write_doc(tmp_path / "s", f"s-{i}", "文本", [])
    assert [d.id for d in read_documents("ccks2017", tmp_path)] == ["s-9", "s-10", "s-100"]


def test_broken_annotations_are_counted_with_file_and_line(tmp_path):
    write_doc(tmp_path / "s", "s-1", "患者头痛三天",
              ["头痛\t2\t3\t症状",        # ok
               "三天\t4\t9\t时间",         # end beyond the text
               "头疼\t2\t3\t症状",         # mention mismatch (and would duplicate)
               "only\tthree\tfields",     # does not parse
               "患者\tx\t1\t人",            # non-integer offset
               "",                        # blank: no annotation
               "头\t2\t2\t症状"])           # nested in 头痛: dropped by keep_longest
    report = ReadReport()
    (doc,) = read_documents("ccks2017", tmp_path, report=report)
    assert doc.spans == [Span(2, 4, "症状")]
    assert report.reasons == {"bad_offsets": 1, "mention_mismatch": 1, "bad_line": 2,
                              "overlap": 1}
    assert (report.read, report.kept, report.rejected, report.repaired) == (1, 1, 0, 1)
    assert report.spans_read == 6 and report.spans_dropped == 5
    by_line = {i.line: i for i in report.issues}
    assert set(by_line) == {2, 3, 4, 5, 7}
    assert by_line[3].path.endswith("s-1.txt") and "'头疼' differs" in by_line[3].problem


def test_strict_raises_at_first_problem(tmp_path):
    write_doc(tmp_path / "s", "s-1", "患者头痛", ["头痛\t2\t3\t症状", "头痛\t2\t9\t症状"])
    with pytest.raises(CorpusError, match=r"s-1\.txt:2: .*beyond the text"):
        list(read_documents("ccks2017", tmp_path, strict=True))


def test_missing_halves_and_other_files_are_reported(tmp_path):
    write_doc(tmp_path / "s", "s-1", "文本一", [])
    (tmp_path / "s" / "s-2.txtoriginal.txt").write_text("文本二", encoding="utf-8")
    (tmp_path / "s" / "s-3.txt").write_text("", encoding="utf-8")
    (tmp_path / "s" / "notes.md").write_text("x", encoding="utf-8")
    report = ReadReport()
    assert [d.id for d in read_documents("ccks2017", tmp_path, report=report)] == ["s-1"]
    assert report.reasons == {"missing_file": 2, "ignored_file": 1}
    assert (report.read, report.rejected) == (3, 2)


def test_types_filter_and_bom_and_gb18030(tmp_path):
    write_doc(tmp_path / "s", "s-1", "患者头痛", ["患者\t0\t1\t人", "头痛\t2\t3\t症状"],
              encoding="gb18030")
    text = tmp_path / "s" / "s-1.txtoriginal.txt"
    report = ReadReport()
    (doc,) = read_documents("ccks2017", tmp_path, report=report, types={"症状"})
    assert doc.spans == [Span(2, 4, "症状")] and report.reasons == {"unknown_type": 1}
    assert report.encodings == {"gb18030": 2}
    text.write_bytes(b"\xef\xbb\xbf" + "患者头痛".encode())
    report = ReadReport()
    (doc,) = read_documents("ccks2017", tmp_path, report=report)
    assert doc.text == "患者头痛" and report.encodings["utf-8-sig"] == 1


def test_undecodable_text_is_rejected(tmp_path):
    write_doc(tmp_path / "s", "s-1", "患者", [])
    # mostly UTF-8, then bytes that decode in no supported encoding (b"\xff\xfe" first would be
    # a UTF-16 BOM, read as UTF-16 since UTF-16 files are supported)
    (tmp_path / "s" / "s-1.txtoriginal.txt").write_bytes(("患者" * 20).encode() + b"\xff\xfe")
    report = ReadReport()
    assert list(read_documents("ccks2017", tmp_path, report=report)) == []
    assert report.reasons == {"decode_error": 1} and report.rejected == 1


def test_bad_paths(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_documents("ccks2017", tmp_path / "nope")
    with pytest.raises(CorpusError, match="empty directory"):
        list(read_documents("ccks2017", tmp_path))
    with pytest.raises(ValueError, match="unknown corpus format"):
        read_documents("conll", tmp_path)


def test_shared_training_set_totals():
    stats = corpus_stats("ccks2017", shared("ccks2017", "train"))
    assert stats["documents"] == 958
    assert stats["entities"] == {"身体部位": 8942, "检查和检验": 7987, "症状和体征": 6486,
                                 "治疗": 853, "疾病和诊断": 515, "total": 24783}
    assert stats["rejected"] == 0 and stats["errors"] == []


def test_shared_training_set_is_streamed_and_matches_the_dataset_dir():
    docs = read_documents("ccks2017", shared("ccks2017"))
    first = next(docs)
    assert first.id == "一般项目-1" and first.meta["section"] == "一般项目"
    for span in first.spans:
        assert first.mention(span)


def test_binary_text_file_is_rejected_as_binary(tmp_path):
    write_doc(tmp_path / "s", "s-1", "患者", [])
    write_doc(tmp_path / "s", "s-2", "头痛", [])
    (tmp_path / "s" / "s-2.txtoriginal.txt").write_bytes(bytes(range(256)) * 32)
    report = ReadReport()
    assert [d.id for d in read_documents("ccks2017", tmp_path, report=report)] == ["s-1"]
    assert report.reasons == {"binary": 1}
    assert report.issues[0].problem.startswith("binary content (a NUL byte at offset 0)")
