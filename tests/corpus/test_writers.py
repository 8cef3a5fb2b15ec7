"""Writers: read(write(docs)) == docs for JSON lines and BRAT, on hand-made and real documents."""
import json
from itertools import islice
from pathlib import Path

import pytest

from cemr.config import data_dir
from cemr.corpus import (Document, ReadReport, Span, read_documents, write_brat, write_jsonl)

ROOT = Path(__file__).resolve().parents[2]


def shared(*parts):
    base = Path(data_dir())
    return (base if base.is_absolute() else ROOT / base).joinpath(*parts)


def docs():
    return [
        Document("病史特点-1", "患者头痛三天，\r\n左腿\t疼痛。",
                 [Span(2, 4, "症状和体征"), Span(9, 11, "身体部位")], meta={"section": "病史特点"}),
        Document("subtask1_training_part1:3", "胃癌术后", [Span(0, 2, "疾病和诊断")]),
        Document("a/b\\c d", "无殊", []),
        Document("multi", "头\n痛", [Span(0, 3, "症状")]),
    ]


def key(d):
    return d.id, d.text, tuple(d.spans)


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "out" / "c.jsonl"
    assert write_jsonl(iter(docs()), path) == 4
    report = ReadReport()
    back = list(read_documents("jsonl", path, report=report, strict=True))
    assert [(key(d), d.meta) for d in back] == [(key(d), d.meta) for d in docs()]
    assert report.read == report.kept == 4
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["entities"][0] == {"start": 2, "end": 4, "type": "症状和体征", "mention": "头痛"}
    assert not path.with_name("c.jsonl.partial").exists()


def test_brat_round_trip(tmp_path):
    assert write_brat(docs(), tmp_path / "brat") == 4
    back = {d.id: d for d in read_documents("brat", tmp_path / "brat", strict=True)}
    assert {k: key(d) for k, d in back.items()} == {d.id: key(d) for d in docs()}
    names = sorted(p.name for p in (tmp_path / "brat").iterdir())
    assert "subtask1_training_part1%3A3.ann" in names and "a%2Fb%5Cc%20d.txt" in names
    ann = (tmp_path / "brat" / "multi.ann").read_text(encoding="utf-8")
    assert ann == "T1\t症状 0 3\t头 痛\n"


def test_writers_refuse_what_readers_would_reject(tmp_path):
    bad_span = Document("x", "ab", [Span(0, 5, "A")])
    with pytest.raises(ValueError, match="'x'.*beyond its text"):
        write_jsonl([bad_span], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        write_jsonl([Document("x", "a"), Document("x", "b")], tmp_path / "y.jsonl")
    with pytest.raises(ValueError, match="whitespace"):
        write_brat([Document("x", "ab", [Span(0, 1, "A B")])], tmp_path / "b1")
    with pytest.raises(ValueError, match="one BRAT file name"):
        write_brat([Document("Ab", "a"), Document("aB", "b")], tmp_path / "b2")
    with pytest.raises(ValueError, match="meta is not JSON"):
        write_jsonl([Document("x", "a", meta={"f": object()})], tmp_path / "z.jsonl")


@pytest.mark.parametrize("fmt, sub", [("ccks2017", "ccks2017"), ("yidu", "yidu_s4k")])
def test_round_trip_of_real_documents(tmp_path, fmt, sub):
    original = list(islice(read_documents(fmt, shared(sub)), 40))
    write_jsonl(original, tmp_path / "c.jsonl")
    write_brat(original, tmp_path / "brat")
    by_jsonl = list(read_documents("jsonl", tmp_path / "c.jsonl", strict=True))
    by_brat = {d.id: d for d in read_documents("brat", tmp_path / "brat", strict=True)}
    assert [(key(d), d.meta) for d in by_jsonl] == [(key(d), d.meta) for d in original]
    assert {k: key(d) for k, d in by_brat.items()} == {d.id: key(d) for d in original}
