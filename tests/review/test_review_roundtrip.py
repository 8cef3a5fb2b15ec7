"""Export -> annotate -> import, on files in each tool's format: the corrections come back as
cemr gold with their provenance, every task accounted for, bad annotations named and counted."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from review_fixtures import item

from cemr.corpus.brat_names import file_stem, read_id_map, storage_type
from cemr.corpus.document import CorpusError, ReadReport, Span
from cemr.corpus.readers import read_documents
from cemr.review.export import (BRAT_CONF, MANIFEST, labelstudio_config, write_brat_tasks, write_doccano,
                                write_labelstudio)
from cemr.review.imports import import_reviewed, read_labelstudio

ITEMS = [
    item("n1.txt:1#0", "患者发热咳嗽三天。", [(2, 4, "SYM", 0.41), (4, 6, "DIS", 0.55)], 0.59, offset=10),
    item("n2.txt:4#1", "既往高血压病史。", [(2, 5, "DIS", 0.62)], 0.38),
]
TYPES = ["DIS", "SYM"]


def _ls_annotate(tasks, corrections):
    """What Label Studio's JSON export holds after annotators worked on the imported tasks."""
    out = []
    for k, task in enumerate(tasks, 1):
        exported = {"id": 100 + k, "data": task["data"], "predictions": [900 + k], "annotations": []}
        for n, result in enumerate(corrections.get(k, ())):
            exported["annotations"].append({
                "id": 10 * k + n, "completed_by": {"id": 3, "email": "ann@example.org"}, "was_cancelled": False,
                "created_at": f"2026-01-0{n + 1}T10:00:00Z", "updated_at": f"2026-01-0{n + 1}T10:00:00Z",
                "result": [{"id": f"r{j}", "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
                            "value": {"start": s, "end": e, "text": task["data"]["text"][s:e], "labels": [t]}}
                           for j, (s, e, t) in enumerate(result)]})
        out.append(exported)
    return out


def test_labelstudio_tasks_follow_its_import_format_and_config(tmp_path):
    path = tmp_path / "tasks.json"
    assert write_labelstudio(ITEMS, path, "cemr round 2") == 2
    tasks = json.loads(path.read_text(encoding="utf-8"))
    config = ET.fromstring(labelstudio_config(TYPES))
    labels, text = config.find("Labels"), config.find("Text")
    assert text.get("value") == "$text" and labels.get("toName") == text.get("name")
    allowed = {x.get("value") for x in labels.findall("Label")}
    first = tasks[0]
    assert first["data"]["text"] == ITEMS[0].text and first["data"]["cemr"]["task"] == "n1.txt:1#0"
    pred = first["predictions"][0]
    assert pred["model_version"] == "cemr round 2" and pred["score"] == pytest.approx(0.41)
    for r in pred["result"]:
        assert (r["from_name"], r["to_name"], r["type"]) == (labels.get("name"), text.get("name"), "labels")
        v = r["value"]
        assert first["data"]["text"][v["start"]:v["end"]] == v["text"] and set(v["labels"]) <= allowed


def test_labelstudio_round_trip_keeps_corrections_and_provenance(tmp_path):
    tasks_path = tmp_path / "tasks.json"
    write_labelstudio(ITEMS, tasks_path, "cemr round 2", exported_from="run/rounds/round_002")
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    # task 1: the annotator fixed a type and added a mention (two passes: the later one counts)
    export = _ls_annotate(tasks, {1: [[(2, 4, "SYM")], [(2, 4, "SYM"), (4, 6, "SYM"), (6, 8, "DIS")]]})
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")  # task 2: not reviewed
    out = tmp_path / "gold.jsonl"
    summary = import_reviewed("labelstudio", export_path, out)
    assert summary["documents"] == 1 and summary["not_reviewed"] == 1
    data = summary["data"]
    assert data["read"] == data["kept"] + data["rejected"] == 2
    assert data["reasons"] == {"multiple_annotations": 1, "not_reviewed": 1}
    (doc,) = list(read_documents("jsonl", out))  # what data.train reads
    assert doc.id == "review:n1.txt:1#0"
    assert doc.spans == [Span(2, 4, "SYM"), Span(4, 6, "SYM"), Span(6, 8, "DIS")]
    review = doc.meta["review"]
    assert review["round"] == 2 and review["doc_id"] == "n1.txt:1" and review["offset"] == 10
    assert review["annotator"] == "ann@example.org" and review["annotation_id"] == 11
    assert review["labelstudio_task_id"] == 101 and review["file"] == str(export_path)
    assert review["exported_from"] == "run/rounds/round_002"


def test_labelstudio_bad_annotations_are_dropped_named_and_counted(tmp_path):
    tasks = [{"data": {"text": "发热咳嗽"}}] * 1
    export = _ls_annotate(tasks, {1: [[(0, 2, "SYM"), (2, 9, "SYM"), (0, 2, "SYM"), (1, 3, "DIS"), (2, 4, "XX")]]})
    export[0]["annotations"][0]["result"].append({"type": "relation", "from_id": "r0", "to_id": "r1"})
    export[0]["annotations"][0]["result"][1]["value"]["text"] = "咳嗽"  # as Label Studio writes it: text != offsets
    export.append({"id": 7, "data": {"text": "胸痛"}, "annotations": [{"id": 1, "was_cancelled": True, "result": []}]})
    export.append({"id": 8, "data": {"image": "x.png"}, "annotations": []})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    report = ReadReport()
    docs = list(read_labelstudio(path, report=report, types={"SYM", "DIS"}))
    assert [d.spans for d in docs] == [[Span(0, 2, "SYM")]]
    assert (report.read, report.kept, report.rejected, report.repaired) == (3, 1, 2, 1)
    assert report.spans_read == report.spans_kept + report.spans_dropped == 5
    assert report.reasons == {"bad_offsets": 1, "duplicate_span": 1, "overlap": 1, "unknown_type": 1,
                              "ignored_labelstudio_relation": 1, "not_reviewed": 1, "missing_field": 1}
    lines = report.issue_lines(20)
    assert any("task #1 result #2" in x and "beyond the text" in x for x in lines)
    assert any("task #3" in x and "no data.text" in x for x in lines)
    with pytest.raises(CorpusError, match="1 of 2 records rejected"):  # not reviewed: not counted
        import_reviewed("labelstudio", path, tmp_path / "gold.jsonl", types={"SYM", "DIS"})
    assert not (tmp_path / "gold.jsonl").exists()


def test_doccano_round_trip(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    write_doccano(ITEMS, tasks)
    rows = [json.loads(x) for x in tasks.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["label"] == [[2, 4, "SYM"], [4, 6, "DIS"]] and rows[0]["cemr"]["round"] == 2
    # doccano's export: its id, the labels as reviewed, the metadata columns kept
    rows[0] = {"id": 1, "text": rows[0]["text"], "label": [[2, 4, "SYM"], [4, 6, "SYM"]], "Comments": [],
               "cemr": rows[0]["cemr"]}
    rows[1] = {"id": 2, "text": rows[1]["text"], "entities": [{"id": 5, "label": "DIS", "start_offset": 2,
                                                             "end_offset": 5}], "meta": {"cemr": rows[1]["cemr"]}}
    export = tmp_path / "admin.jsonl"
    export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"text": "无"}\n',
                      encoding="utf-8")
    with pytest.raises(CorpusError, match="missing_field: 1"):  # a line with no labels field is not gold
        import_reviewed("doccano", export, tmp_path / "gold.jsonl")
    export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    summary = import_reviewed("doccano", export, tmp_path / "gold.jsonl")
    assert summary["entities"] == {"DIS": 1, "SYM": 2}
    docs = list(read_documents("jsonl", tmp_path / "gold.jsonl"))
    assert [d.id for d in docs] == ["review:n1.txt:1#0", "review:n2.txt:4#1"]
    assert docs[0].spans == [Span(2, 4, "SYM"), Span(4, 6, "SYM")]
    assert docs[1].meta["review"]["doccano_id"] == 2 and docs[1].meta["review"]["line"] == 2
    assert docs[1].meta["review"]["sent_id"] == 0


def test_brat_round_trip(tmp_path):
    out = tmp_path / "brat"
    write_brat_tasks(ITEMS, out, TYPES)
    assert (out / BRAT_CONF).read_text().startswith("[entities]\nDIS\nSYM\n")
    # readable file names without '%' (brat puts the name in its URLs): the id's letters, '_' for the
    # rest and a digest of the id; each recorded with its task id
    name = file_stem("n1.txt:1#0")
    assert name.startswith("n1.txt_1_0-") and "%" not in name
    assert read_id_map(out) == {file_stem(it.id): it.id for it in ITEMS}
    ann = out / f"{name}.ann"
    lines = ann.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "T1\tSYM 2 4\t发热" and lines[2].startswith("#1\tAnnotatorNotes T1\tcemr confidence 0.410")
    # the annotator, in brat: DIS -> SYM for T2, one mention added
    ann.write_text("T1\tSYM 2 4\t发热\nT2\tSYM 4 6\t咳嗽\nT3\tDIS 6 8\t三天\n", encoding="utf-8")
    summary = import_reviewed("brat", out, tmp_path / "gold.jsonl")
    data = summary["data"]
    assert summary["documents"] == 2 and data["rejected"] == 0
    assert data["reasons"]["ignored_file"] == 4  # annotation.conf, visual.conf, the id map, the manifest: noted
    docs = {d.id: d for d in read_documents("jsonl", tmp_path / "gold.jsonl")}
    doc = docs["review:n1.txt:1#0"]
    assert doc.spans == [Span(2, 4, "SYM"), Span(4, 6, "SYM"), Span(6, 8, "DIS")]
    assert doc.meta["review"]["in_manifest"] and doc.meta["review"]["round"] == 2
    assert docs["review:n2.txt:4#1"].spans == [Span(2, 5, "DIS")]
    (out / MANIFEST).write_text("not json\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{MANIFEST}:1"):
        import_reviewed("brat", out, tmp_path / "gold2.jsonl")


def test_brat_tasks_with_chinese_types_open_in_brat_and_their_corrections_come_back(tmp_path):
    """brat stores types matching [A-Za-z0-9_-]+ only (it would turn every Chinese type into
    '_____'): the types are declared and written in a form it stores, labelled with their names."""
    import re

    dis, sym = "疾病和诊断", "症状和体征"
    items = [item("病史特点-1#0", "患者发热，既往高血压。", [(2, 4, sym, 0.41)], 0.59)]
    out = tmp_path / "brat"
    write_brat_tasks(items, out, [dis, sym])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["annotation.conf", "visual.conf", "cemr_ids.jsonl", MANIFEST, f"{file_stem('病史特点-1#0')}.txt",
         f"{file_stem('病史特点-1#0')}.ann"])
    conf = (out / BRAT_CONF).read_text(encoding="utf-8")
    declared = conf.split("[entities]\n")[1].split("\n\n")[0].splitlines()
    assert declared == [storage_type(dis), storage_type(sym)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in declared) and len(set(declared)) == 2
    for section in ("[relations]", "[events]", "[attributes]"):
        assert section in conf
    visual = (out / "visual.conf").read_text(encoding="utf-8")
    assert f"{storage_type(dis)} | {dis}\n" in visual and f"{storage_type(sym)} | {sym}\n" in visual
    ann = out / f"{file_stem('病史特点-1#0')}.ann"
    assert ann.read_text(encoding="utf-8").startswith(f"T1\t{storage_type(sym)} 2 4\t发热\n")
    # the annotator adds a disease, choosing the type brat offers (its storage form)
    ann.write_text(f"T1\t{storage_type(sym)} 2 4\t发热\nT2\t{storage_type(dis)} 7 10\t高血压\n", encoding="utf-8")
    import_reviewed("brat", out, tmp_path / "gold.jsonl")
    (doc,) = read_documents("jsonl", tmp_path / "gold.jsonl")
    assert doc.id == "review:病史特点-1#0" and doc.spans == [Span(2, 4, sym), Span(7, 10, dis)]
