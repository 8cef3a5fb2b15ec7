"""Yidu-S4K reader: JSON lines with a BOM, broken records, and the shared training totals."""
import json
from pathlib import Path

import pytest

from cemr.config import data_dir
from cemr.corpus import CorpusError, ReadReport, Span, corpus_stats, read_documents

ROOT = Path(__file__).resolve().parents[2]


def shared(*parts):
    base = Path(data_dir())
    return (base if base.is_absolute() else ROOT / base).joinpath(*parts)


def rec(text, *ents):
    return json.dumps({"originalText": text, "entities": [
        {"label_type": t, "overlap": 0, "start_pos": s, "end_pos": e} for s, e, t in ents]},
        ensure_ascii=False)


def test_bom_file_and_directory(tmp_path):
    (tmp_path / "part1.txt").write_bytes(
        b"\xef\xbb\xbf" + (rec("患者头痛", (2, 4, "症状")) + "\n" + rec("胃癌术后", (0, 2, "疾病和诊断"))
                           + "\n").encode("utf-8"))
    (tmp_path / "part2.jsonl").write_text(rec("无殊") + "\n", encoding="utf-8")
    report = ReadReport()
    docs = list(read_documents("yidu", tmp_path, report=report))
    assert [d.id for d in docs] == ["part1:1", "part1:2", "part2:1"]
    assert docs[0].text == "患者头痛" and docs[0].spans == [Span(2, 4, "症状")]
    assert docs[1].mention(docs[1].spans[0]) == "胃癌"
    assert docs[0].source.endswith("part1.txt:1")
    assert report.encodings == {"utf-8-sig": 1, "utf-8": 1}
    single = list(read_documents("yidu", tmp_path / "part1.txt"))
    assert [d.id for d in single] == ["part1:1", "part1:2"]


def test_broken_records(tmp_path):
    lines = [
        rec("患者头痛", (2, 4, "症状"), (2, 9, "症状"), (3, 4, "症状")),  # out of range, nested
        '{"originalText": "x", "entities": [',                          # bad JSON
        "",                                                             # empty line
        '["not", "an", "object"]',
        '{"entities": []}',                                             # no text
        rec(""),                                                        # empty text
        json.dumps({"originalText": "abc", "entities": [{"label_type": "A", "start_pos": "0",
                                                          "end_pos": 1}]}),
    ]
    path = tmp_path / "d.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    report = ReadReport()
    docs = list(read_documents("yidu", path, report=report))
    assert [d.id for d in docs] == ["d:1", "d:7"]
    assert docs[0].spans == [Span(2, 4, "症状")] and docs[1].spans == []
    assert report.reasons == {"bad_offsets": 1, "overlap": 1, "bad_json": 1, "empty": 2,
                              "bad_record": 1, "missing_field": 1, "bad_entity": 1}
    assert (report.read, report.kept, report.rejected, report.repaired) == (7, 2, 5, 2)
    bad_json = next(i for i in report.issues if i.line == 2)
    assert bad_json.path == str(path) and "invalid JSON" in bad_json.problem
    assert bad_json.action == "rejected"


def test_strict_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(rec("患者") + "\n{oops\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"d\.txt:2: invalid JSON"):
        list(read_documents("yidu", path, strict=True))


def test_overlap_policies(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(rec("左侧乳腺癌", (0, 4, "解剖部位"), (2, 5, "疾病和诊断")) + "\n",
                    encoding="utf-8")
    (doc,) = read_documents("yidu", path, overlap_policy="keep_longest")
    assert doc.spans == [Span(0, 4, "解剖部位")]
    (doc,) = read_documents("yidu", path, overlap_policy="keep_first")
    assert doc.spans == [Span(0, 4, "解剖部位")]
    report = ReadReport()
    assert list(read_documents("yidu", path, overlap_policy="error", report=report)) == []
    assert report.reasons == {"overlap": 1}
    with pytest.raises(ValueError, match="overlap_policy"):
        read_documents("yidu", path, overlap_policy="longest")


def test_other_files_in_directory_are_noted(tmp_path):
    (tmp_path / "a.txt").write_text(rec("患者") + "\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("about", encoding="utf-8")
    report = ReadReport()
    assert len(list(read_documents("yidu", tmp_path, report=report))) == 1
    assert report.reasons == {"ignored_file": 1}


def test_shared_training_totals():
    stats = corpus_stats("yidu", shared("yidu_s4k"))
    assert stats["documents"] == 1000
    assert stats["entities"] == {"解剖部位": 8426, "疾病和诊断": 4212, "药物": 1822,
                                 "实验室检验": 1195, "手术": 1029, "影像检查": 969,
                                 "total": 17653}
    assert stats["encodings"] == {"utf-8": 1, "utf-8-sig": 1}
    assert stats["rejected"] == 0 and stats["errors"] == []
    first = next(read_documents("yidu", shared("yidu_s4k")))
    assert first.id == "subtask1_training_part1:1" and not first.text.startswith("\ufeff")


DATA = Path(__file__).parent / "data"


def test_hand_made_bad_yidu_file():
    report = ReadReport()
    docs = list(read_documents("yidu", DATA / "yidu_bad.txt", report=report))
    assert [d.id for d in docs] == ["yidu_bad:1", "yidu_bad:5"] and docs[1].spans == []
    assert report.reasons == {"unknown_keys": 2, "bad_json": 1, "bad_offsets": 1}
    labels = next(i for i in report.issues if i.line == 3)
    assert labels.problem == ("unknown key(s) 'labels' in a Yidu-S4K record "
                              "(expected keys: entities, originalText)")


def test_a_json_array_of_yidu_records_is_named_as_such():
    report = ReadReport()
    with pytest.raises(CorpusError, match="format yidu does not fit: it looks like text "
                                          r"\(one JSON array"):
        read_documents("yidu", DATA / "yidu_array.json")
    texts = [d.text for d in read_documents("text", DATA / "yidu_array.json", report=report)]
    assert texts == ["患者头痛", "无殊"]  # as text: the records' originalText
