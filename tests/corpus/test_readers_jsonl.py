"""Generic JSON-lines reader (cemr's exchange format)."""
import json
from pathlib import Path

import pytest

from cemr.corpus import CorpusError, ReadReport, Span, read_documents
from cemr.corpus.detect import SAMPLE_FILES


def line(**record):
    return json.dumps(record, ensure_ascii=False)


def test_reads_records_with_optional_fields(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([
        line(id="a", text="患者头痛", entities=[{"start": 2, "end": 4, "type": "症状",
                                               "mention": "头痛"}], meta={"split": "train"}),
        line(text="无殊"),                       # no id, no entities
        line(id=7, text="abc", entities=[]),     # integer id
    ]) + "\n", encoding="utf-8")
    docs = list(read_documents("jsonl", path))
    assert [d.id for d in docs] == ["a", "c:2", "7"]
    assert docs[0].spans == [Span(2, 4, "症状")] and docs[0].meta == {"split": "train"}
    assert docs[1].spans == [] and docs[1].source.endswith("c.jsonl:2")


def test_problems_are_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([
        line(id="a", text="患者头痛", entities=[
            {"start": 2, "end": 4, "type": "症状", "mention": "头疼"},   # mismatch
            {"start": 0, "end": 2, "type": "人"},
            {"start": 0, "end": 2, "type": "人"},                       # duplicate
            {"start": 0, "end": 2.0, "type": "人"},                     # float offset
            {"start": 3, "end": 1, "type": "人"}]),                     # reversed
        line(id="a", text="again"),                                    # duplicate id
        line(id="b", text=5),                                          # text not a string
        line(id="", text="x"),                                         # bad id
        line(id="c", text="x", entities={"start": 0}),                 # entities not a list
        "{not json",
    ]) + "\n", encoding="utf-8")
    report = ReadReport()
    docs = list(read_documents("jsonl", path, report=report))
    assert [d.id for d in docs] == ["a"] and docs[0].spans == [Span(0, 2, "人")]
    assert report.reasons == {"mention_mismatch": 1, "duplicate_span": 1, "bad_entity": 1,
                              "bad_offsets": 1, "duplicate_id": 1, "missing_field": 1,
                              "bad_record": 2, "bad_json": 1}
    assert (report.read, report.kept, report.rejected) == (6, 1, 5)
    assert report.spans_read == report.spans_kept + report.spans_dropped == 5
    dup = next(i for i in report.issues if "duplicate document id" in i.problem)
    assert dup.line == 2 and "c.jsonl:1" in dup.problem


def test_strict_and_types(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(line(id="a", text="abc", entities=[{"start": 0, "end": 1, "type": "X"}])
                    + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.jsonl:1: .*unknown entity type 'X'"):
        list(read_documents("jsonl", path, types={"Y"}, strict=True))
    (doc,) = read_documents("jsonl", path, types={"X"}, strict=True)
    assert doc.spans == [Span(0, 1, "X")]


def test_directory_of_files_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text(line(id="b", text="x") + "\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(line(id="a", text="y") + "\n", encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    report = ReadReport()
    assert [d.id for d in read_documents("jsonl", tmp_path, report=report)] == ["a", "b"]
    assert report.reasons == {"empty": 1} and report.read == 3


DATA = Path(__file__).parent / "data"


def test_unknown_keys_reject_the_record_never_an_entity_free_document():
    report = ReadReport()
    docs = list(read_documents("jsonl", DATA / "jsonl_spans.jsonl", report=report))
    assert [d.id for d in docs] == ["a"]  # "b" (spans, not entities) is not a document
    assert report.reasons == {"unknown_keys": 2} and report.rejected == 2
    spans = report.issues[0]
    assert (spans.line, spans.action) == (2, "rejected")
    assert spans.problem == ("unknown key(s) 'spans' in a JSON-lines record "
                             "(expected keys: entities, id, meta, text)")
    assert "'source'" in report.issues[1].problem
    with pytest.raises(CorpusError, match=r"jsonl_spans\.jsonl:2: unknown key\(s\) 'spans'"):
        list(read_documents("jsonl", DATA / "jsonl_spans.jsonl", strict=True))


def test_prediction_output_with_confidences_is_read(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text(line(id="a", text="患者头痛", entities=[
        {"start": 2, "end": 4, "type": "症状", "mention": "头痛", "confidence": 0.9}]) + "\n",
        encoding="utf-8")
    (doc,) = read_documents("jsonl", path)
    assert doc.spans == [Span(2, 4, "症状")]


def test_a_json_array_is_named_as_such(tmp_path):
    array = json.dumps([{"id": "a", "text": "头痛"}, {"id": "b", "text": "发热"}], indent=1)
    (tmp_path / "arr.jsonl").write_text(array + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"format jsonl does not fit: .*one JSON array of "
                                          r"records with keys id, text, not JSON lines"):
        read_documents("jsonl", tmp_path / "arr.jsonl")
    # past the files a directory's detection samples, the reader meets it and says what it is
    (tmp_path / "arr.jsonl").rename(tmp_path / "z.jsonl")
    for k in range(SAMPLE_FILES):
        (tmp_path / f"{k}.jsonl").write_text(line(id=str(k), text="无", entities=[]) + "\n",
                                             encoding="utf-8")
    report = ReadReport()
    assert len(list(read_documents("jsonl", tmp_path, report=report))) == SAMPLE_FILES
    assert report.reasons == {"json_array": 1} and report.rejected == 1
    assert report.issues[0].problem.startswith("the file is one JSON array, not JSON lines")


def test_utf16_and_binary_files_in_a_directory(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\xff\xfe" + (line(id="a", text="上腹痛", entities=[
        {"start": 0, "end": 3, "type": "症状"}]) + "\n").encode("utf-16-le"))
    (tmp_path / "b.jsonl").write_bytes(bytes(range(256)) * 4)
    report = ReadReport()
    (doc,) = read_documents("jsonl", tmp_path, report=report)
    assert doc.text == "上腹痛" and doc.spans == [Span(0, 3, "症状")]
    assert report.encodings == {"utf-16-le": 1}
    assert report.reasons == {"binary": 1} and "b.jsonl" in report.issues[0].path
