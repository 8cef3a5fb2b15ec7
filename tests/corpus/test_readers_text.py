"""Unlabeled text reader: files and directories of .txt / extensionless / .jsonl / .json / .csv /
.tsv, per-line and per-file, empty lines counted, ids stable, real shared corpora."""
import json
from pathlib import Path

import pytest

from cemr.config import data_dir
from cemr.corpus import CorpusError, ReadReport, read_documents, read_unlabeled

ROOT = Path(__file__).resolve().parents[2]


def shared(*parts):
    base = Path(data_dir())
    return (base if base.is_absolute() else ROOT / base).joinpath(*parts)


def consistent(report):
    assert report.read == report.kept + report.rejected


def test_lines_and_empty_lines_counted(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("患者头痛\r\n\r\n  \n 发热三天 \n".encode())
    report = ReadReport()
    docs = list(read_unlabeled(f, report=report))
    assert [(d.id, d.text) for d in docs] == [("a.txt:1", "患者头痛"), ("a.txt:4", "发热三天")]
    assert docs[0].source == f"{f}:1"
    assert report.reasons == {"empty": 2} and report.read == 4
    assert {i.line for i in report.issues} == {2, 3}
    consistent(report)


def test_directory_recursive_sorted_with_relpath_ids(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sec-1").write_text("第一行\n第二行", encoding="utf-8")  # extensionless
    (tmp_path / "a.txt").write_text("甲", encoding="utf-8")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("never read", encoding="utf-8")
    report = ReadReport()
    ids = [d.id for d in read_unlabeled(tmp_path, report=report)]
    assert ids == ["a.txt:1", "b/sec-1:1", "b/sec-1:2"]
    assert report.reasons == {"empty": 1, "ignored_file": 1}
    assert ids == [d.id for d in read_unlabeled(tmp_path)]  # deterministic
    report = ReadReport()
    per_file = list(read_unlabeled(tmp_path, per_line=False, report=report))
    assert [(d.id, d.text) for d in per_file] == [("a.txt", "甲"), ("b/sec-1", "第一行\n第二行")]
    assert report.reasons["empty"] == 1 and report.read == 3
    consistent(report)


def test_limit_stops_early(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(str(i) for i in range(100)), encoding="utf-8")
    report = ReadReport()
    assert [d.text for d in read_unlabeled(tmp_path, limit=3, report=report)] == ["0", "1", "2"]
    assert report.read == 3
    assert list(read_unlabeled(tmp_path, limit=0)) == []
    with pytest.raises(ValueError):
        read_unlabeled(tmp_path, limit=-1)


def test_jsonl_default_fields_and_column(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join([json.dumps({"text": "一"}, ensure_ascii=False),
                            json.dumps({"originalText": "二"}, ensure_ascii=False),
                            json.dumps({"ask": "三"}, ensure_ascii=False),
                            "{bad", ""]) + "\n", encoding="utf-8")
    report = ReadReport()
    assert [d.text for d in read_unlabeled(f, report=report)] == ["一", "二"]
    assert report.reasons == {"missing_field": 1, "bad_json": 1, "empty": 1}
    consistent(report)
    assert [d.id for d in read_unlabeled(f, column="ask")] == ["q.jsonl:3"]


def test_json_array_and_json_lines_in_dot_json(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"output": "甲"}, {"output": ""}, {"x": 1}, 3], ensure_ascii=False),
                   encoding="utf-8")
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps({"output": "乙"}, ensure_ascii=False) + "\n", encoding="utf-8")
    report = ReadReport()
    docs = list(read_unlabeled(tmp_path, column="output", report=report))
    assert [(d.id, d.text) for d in docs] == [("arr.json:1", "甲"), ("lines.json:1", "乙")]
    assert report.reasons == {"empty": 1, "missing_field": 1, "bad_record": 1}
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    report = ReadReport()
    list(read_unlabeled(tmp_path / "broken.json", report=report))
    assert report.reasons == {"bad_json": 1}


def test_csv_header_and_quoted_multiline(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes('title,ask\r\n一,"多行\r\n问题"\r\n二,\r\n三\r\n四,"问, 题"\r\n'.encode("gb18030"))
    report = ReadReport()
    docs = list(read_unlabeled(f, column="ask", report=report))
    assert [(d.id, d.text) for d in docs] == [("t.csv:2", "多行\r\n问题"), ("t.csv:6", "问, 题")]
    assert report.reasons == {"empty": 1, "missing_field": 1}
    assert report.encodings == {"gb18030": 1}
    assert {i.line for i in report.issues} == {4, 5}
    with pytest.raises(CorpusError, match=r"t\.csv:1: no column 'answer'"):
        list(read_unlabeled(f, column="answer"))


def test_tsv_index_column_has_no_header(tmp_path):
    f = tmp_path / "qa.tsv"
    f.write_text('0\t问一\t"答""一"""\n1\t问二\t答二\n', encoding="utf-8")
    assert [d.text for d in read_unlabeled(f, column="2")] == ['答"一"', "答二"]
    assert [d.id for d in read_unlabeled(f, column="1")] == ["qa.tsv:1", "qa.tsv:2"]


def test_gb18030_and_bom_and_undecodable_lines(tmp_path):
    (tmp_path / "gb.txt").write_bytes("高血压患者能吃党参吗\n".encode("gb18030"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "头痛\n".encode())
    (tmp_path / "mixed.txt").write_bytes("头痛\n".encode() + b"\xff\xfe\n" + "发热\n".encode())
    report = ReadReport()
    texts = [d.text for d in read_unlabeled(tmp_path, report=report)]
    assert texts == ["头痛", "高血压患者能吃党参吗", "头痛", "发热"]
    assert report.encodings == {"gb18030": 1, "utf-8-sig": 1, "utf-8": 1}
    assert report.reasons == {"decode_error": 1}
    assert report.issues[0].path.endswith("mixed.txt") and report.issues[0].line == 2
    (tmp_path / "bin.txt").write_bytes(b"\x80\x81\xff\xff\x00")
    with pytest.raises(CorpusError, match="bin.txt: binary content"):  # the whole input
        read_unlabeled(tmp_path / "bin.txt")
    report = ReadReport()  # one file of a directory: that record is rejected
    assert len(list(read_unlabeled(tmp_path, report=report))) == 4
    assert report.reasons == {"decode_error": 1, "binary": 1}


def test_read_documents_text_dispatch(tmp_path):
    (tmp_path / "a.txt").write_text("一\n二\n", encoding="utf-8")
    assert [d.text for d in read_documents("text", tmp_path)] == ["一", "二"]
    with pytest.raises(CorpusError, match="no such file"):
        read_unlabeled(tmp_path / "missing")


def test_shared_ccks_unlabeled_files():
    report = ReadReport()
    n = sum(1 for _ in read_unlabeled(shared("ccks2017", "unlabeled"), per_line=False,
                                      report=report))
    assert report.read == 9603  # every file is one record: none silently skipped
    assert n == report.kept and report.rejected == report.reasons["empty"] > 0
    assert report.encodings == {"utf-8": 9603}


def test_shared_gb18030_dialogue_and_tsv():
    report = ReadReport()
    first = next(iter(read_unlabeled(shared("unlabeled_text", "toyhom_dialogue", "内科.txt"),
                                     report=report)))
    assert first.text.startswith("高血压患者能吃党参吗") and report.encodings == {"gb18030": 1}
    docs = read_unlabeled(shared("unlabeled_text", "cmedqa", "dev.txt"), column="1", limit=2)
    assert [d.id for d in docs] == ["dev.txt:1", "dev.txt:2"]
