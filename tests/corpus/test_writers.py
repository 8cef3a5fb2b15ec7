"""Writers: read(write(docs)) == docs for JSON lines and BRAT, on hand-made and real documents."""
import json
import re
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemr.config import data_dir
from cemr.corpus import (CorpusError, Document, ReadReport, Span, read_documents, write_brat, write_jsonl)
from cemr.corpus.brat_names import (ANNOTATION_CONF, ID_MAP, VISUAL_CONF, FileNamer, file_stem, original_type,
                                    read_id_map, storage_type)

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


def read_brat(root, **kw):
    """The BRAT reader's documents by id, each file's id taken from cemr_ids.jsonl and ``xn--``
    types decoded (what the reader does itself once it reads the map; a no-op then)."""
    ids = read_id_map(root)
    out = {}
    for d in read_documents("brat", root, **kw):
        doc_id = ids.get(d.id, d.id)
        out[doc_id] = Document(doc_id, d.text, [Span(s.start, s.end, original_type(s.type)) for s in d.spans])
    return out


def test_brat_round_trip(tmp_path):
    out = tmp_path / "brat"
    assert write_brat(docs(), out) == 4
    back = read_brat(out, strict=True)
    assert {k: key(d) for k, d in back.items()} == {d.id: key(d) for d in docs()}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    part, slash = file_stem("subtask1_training_part1:3"), file_stem("a/b\\c d")
    assert part.startswith("subtask1_training_part1_3-") and slash.startswith("a/b_c_d-")
    assert files == sorted(["annotation.conf", "visual.conf", "cemr_ids.jsonl", "multi.ann", "multi.txt",
                            "病史特点-1.ann", "病史特点-1.txt", f"{part}.ann", f"{part}.txt", f"{slash}.ann",
                            f"{slash}.txt"])
    assert not [f for f in files if "%" in f]  # brat puts names in URLs: no percent escapes
    # only the names that differ from their ids are recorded
    assert read_id_map(out) == {part: "subtask1_training_part1:3", slash: "a/b\\c d"}
    ann = (out / "multi.ann").read_text(encoding="utf-8")
    assert ann == f"T1\t{storage_type('症状')} 0 3\t头 痛\n"
    assert (out / "病史特点-1.ann").read_text(encoding="utf-8").startswith(f"T1\t{storage_type('症状和体征')} 2 4\t头痛\n")


def test_brat_names_keep_the_id_readable_and_a_path_id_becomes_directories(tmp_path):
    out = tmp_path / "brat"
    doc = Document("ccks2017/train/病史特点-1", "患者头痛。", [Span(2, 4, "症状和体征")])
    write_brat([doc], out)
    assert (out / "ccks2017" / "train" / "病史特点-1.txt").read_text(encoding="utf-8") == "患者头痛。"
    assert not (out / ID_MAP).exists()  # no name changed
    assert {k: key(d) for k, d in read_brat(out).items()} == {doc.id: key(doc)}
    # a name depends on its id alone: the same in any order, in any process
    assert file_stem("notes.txt:3") == file_stem("notes.txt:3") != file_stem("notes.txt 3")
    assert file_stem("..") != ".." and not file_stem(".hidden").startswith(".")


def test_brat_collisions_up_to_case_get_a_unique_name_recorded_in_the_id_map(tmp_path):
    out = tmp_path / "brat"
    original = [Document("Ab", "一", [Span(0, 1, "X")]), Document("aB", "二", [Span(0, 1, "Y")]),
                Document("D/x", "三"), Document("d/y", "四")]
    write_brat(original, out)
    ids = read_id_map(out)
    assert sorted(ids.values()) == ["aB", "d/y"]  # the first of each spelling keeps its name
    assert len({n.casefold() for n in [*ids, "Ab", "D/x"]}) == 4
    assert all(n.startswith("D/") for n, i in ids.items() if i == "d/y")  # one directory, whatever the case
    assert {k: key(d) for k, d in read_brat(out).items()} == {d.id: key(d) for d in original}


def test_brat_annotation_conf_declares_every_type_in_a_form_brat_stores(tmp_path):
    out = tmp_path / "brat"
    write_brat([Document("d1", "头痛，服用阿司匹林", [Span(0, 2, "症状和体征"), Span(5, 9, "DRUG")])], out,
               types=["疾病和诊断", "症状和体征"])
    conf = (out / ANNOTATION_CONF).read_text(encoding="utf-8")
    sections = re.findall(r"^\[(\w+)\]$", conf, flags=re.MULTILINE)
    assert sections == ["entities", "relations", "events", "attributes"]
    entities = conf.split("[entities]\n")[1].split("\n\n")[0].splitlines()
    # declared types first, then the others written; each as brat stores it, unchanged when it can
    assert [original_type(t) for t in entities] == ["疾病和诊断", "症状和体征", "DRUG"]
    assert entities[2] == "DRUG" and all(re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in entities)
    visual = (out / VISUAL_CONF).read_text(encoding="utf-8")
    assert re.findall(r"^\[(\w+)\]$", visual, flags=re.MULTILINE) == ["labels", "drawing"]
    for t in ("疾病和诊断", "症状和体征", "DRUG"):
        assert f"{storage_type(t)} | {t}\n" in visual
    colours = re.findall(r"^(\S+)\tbgColor:(#[0-9a-f]{6})$", visual, flags=re.MULTILINE)
    assert [c[0] for c in colours] == entities and len({c[1] for c in colours}) == 3


def test_brat_storage_types_round_trip_and_a_stale_id_map_is_removed(tmp_path):
    for t in ["DRUG", "B-药物", "疾病和诊断", "A B", "a:b", "xn--abc", "---", "检查（实验室）"]:
        stored = storage_type(t)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", stored) and stored.strip("-") and original_type(stored) == t
    assert storage_type("DRUG") == "DRUG" and storage_type("B-X") == "B-X"
    out = tmp_path / "brat"
    write_brat([Document("a:1", "x")], out)
    assert read_id_map(out)
    write_brat([Document("a1", "x")], out)  # no name changed now: the old map would lie
    assert not (out / ID_MAP).exists()


def test_a_bad_id_map_is_an_error_naming_its_line(tmp_path):
    (tmp_path / ID_MAP).write_text('{"file": "a", "id": "x"}\n{"file": "b"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"cemr_ids.jsonl:2: expected"):
        read_id_map(tmp_path)
    (tmp_path / ID_MAP).write_text('{"file": "a", "id": "x"}\n{"file": "b", "id": "x"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"cemr_ids.jsonl:2: document id 'x' also on line 1"):
        read_id_map(tmp_path)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
def test_any_ids_get_safe_unique_names_that_map_back(ids):
    namer = FileNamer()
    names = [namer.name(i) for i in ids]
    assert len({n.casefold() for n in names}) == len(names)
    for n in names:
        assert "%" not in n and "\\" not in n
        for part in n.split("/"):
            assert part and not part.startswith(".") and all(c.isalnum() or c in "-_." for c in part)
    assert dict(namer.renamed) == {n: i for n, i in zip(names, ids) if n != i}


def test_writers_refuse_what_readers_would_reject(tmp_path):
    bad_span = Document("x", "ab", [Span(0, 5, "A")])
    with pytest.raises(ValueError, match="'x'.*beyond its text"):
        write_jsonl([bad_span], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        write_jsonl([Document("x", "a"), Document("x", "b")], tmp_path / "y.jsonl")
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        write_brat([Document("x", "a"), Document("x", "b")], tmp_path / "b2")
    with pytest.raises(ValueError, match="meta is not JSON"):
        write_jsonl([Document("x", "a", meta={"f": object()})], tmp_path / "z.jsonl")


@pytest.mark.parametrize("fmt, sub", [("ccks2017", "ccks2017"), ("yidu", "yidu_s4k")])
def test_round_trip_of_real_documents(tmp_path, fmt, sub):
    original = list(islice(read_documents(fmt, shared(sub)), 40))
    write_jsonl(original, tmp_path / "c.jsonl")
    write_brat(original, tmp_path / "brat")
    by_jsonl = list(read_documents("jsonl", tmp_path / "c.jsonl", strict=True))
    by_brat = read_brat(tmp_path / "brat", strict=True)
    assert [(key(d), d.meta) for d in by_jsonl] == [(key(d), d.meta) for d in original]
    assert {k: key(d) for k, d in by_brat.items()} == {d.id: key(d) for d in original}
