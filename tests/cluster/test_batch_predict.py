"""Streaming batch inference (cluster.batch_predict): read tasks keep the readers' accounting, shards
report what they hold, the manifest accounts for every input document, and the pipeline on a local
Ray instance tags what cemr's one inference path tags, complete or not at all."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cemr.corpus.brat_names import file_stem, read_id_map, storage_type
from cemr.corpus.document import CorpusError
from cluster import batch_predict as bp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tagger_fakes
from tagger_fakes import tiny_model_dir

NOTES = "患者有糖尿病，服用胰岛素治疗。\n\n今日复查肺炎好转。\n"  # the empty line: rejected, counted


def _sources(tmp_path, *files):
    return bp.prepare_sources([str(f) for f in files], "auto", log=lambda m: None)


def _notes(tmp_path, name="notes.txt", text=NOTES):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------------------------
# The pieces, without Ray
# ----------------------------------------------------------------------------------------------


def test_a_read_task_yields_its_input_in_chunks_and_leaves_the_readers_accounting(tmp_path):
    notes = _notes(tmp_path, text="一。\n\n二。\n三。\n")
    sources = _sources(tmp_path, notes)
    reads = tmp_path / "reads"
    reads.mkdir()
    batches = list(bp.read_input_batches({"input": np.array([0])}, sources=sources, column=None, chunk=2,
                                         ids_only=False, reads_dir=str(reads)))
    assert [list(b["id"]) for b in batches] == [["notes.txt:1", "notes.txt:3"], ["notes.txt:4"]]
    assert [list(b["input"]) for b in batches] == [[0, 0], [0]]
    acc = json.loads((reads / "0.json").read_text(encoding="utf-8"))
    assert (acc["format"], acc["read"], acc["kept"], acc["rejected"], acc["reasons"]) == ("text", 4, 3, 1, {"empty": 1})
    ids = list(bp.read_input_batches({"input": np.array([0])}, sources=sources, column=None, chunk=10,
                                     ids_only=True, out_format="brat"))
    # BRAT: the file names, folded (one file on a case-insensitive file system)
    assert list(ids[0]["key"]) == [file_stem(f"notes.txt:{n}").casefold() for n in (1, 3, 4)]
    assert ids[0]["key"][0].startswith("notes.txt_1-")
    assert ids[0]["source"][0].endswith("notes.txt:1")


def test_an_input_without_a_readable_document_is_an_error_naming_it(tmp_path):
    sources = _sources(tmp_path, _notes(tmp_path, "empty.txt", "\n\n"))
    reads = tmp_path / "reads"
    reads.mkdir()
    list(bp.read_input_batches({"input": np.array([0])}, sources=sources, column=None, chunk=4, ids_only=True,
                               reads_dir=str(reads)))
    with pytest.raises(CorpusError, match=r"empty.txt: no document could be read as text \(2 record\(s\) read"):
        bp.load_reads(reads, sources)


def test_repeated_ids_name_both_sources():
    row = {"key": "a.txt:1", "n": 2, "first_id": "a.txt:1", "last_id": "a.txt:1",
           "first_source": "d1/a.txt:1", "last_source": "d2/a.txt:1"}
    err = bp.duplicate_error(row, "jsonl")
    assert isinstance(err, CorpusError) and "d2/a.txt:1" in str(err) and "of d1/a.txt:1" in str(err)
    err = bp.duplicate_error({**row, "first_id": "A", "last_id": "a"}, "brat")
    assert "'A'" in str(err) and "'a'" in str(err) and "one brat file name" in str(err)


def _block(ids, texts, ents, inputs):
    return pa.table({"id": ids, "text": texts, "entities": [json.dumps(e) for e in ents], "input": inputs})


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "brat"])
def test_a_shard_holds_its_rows_and_says_how_many_per_input(tmp_path, fmt):
    sink = bp.ShardSink(tmp_path, fmt, rows_per_shard=10)
    ents = [[{"start": 3, "end": 6, "type": "DIS", "confidence": 0.98765432}], []]
    got = sink.write([_block(["a:1", "b:1"], ["患者有糖尿病。", "无。"], ents, [0, 1]),
                      _block(["a:2"], ["好。"], [[]], [0])], SimpleNamespace(task_idx=7))
    assert got["documents"] == 3 and got["inputs"] == {0: 2, 1: 1}
    if fmt == "jsonl":
        rows = [json.loads(x) for x in (tmp_path / "part-000007.jsonl").read_text(encoding="utf-8").splitlines()]
    elif fmt == "parquet":
        rows = pq.read_table(tmp_path / "part-000007.parquet").to_pylist()
    else:
        names = {i: file_stem(i) for i in ("a:1", "b:1", "a:2")}
        assert got["name"] == "part-000007" and got["types"] == ["DIS"]
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == \
            sorted(f"{n}{ext}" for n in names.values() for ext in (".txt", ".ann"))
        assert "DIS 3 6\t糖尿病" in (tmp_path / f"{names['a:1']}.ann").read_text(encoding="utf-8")
        # the renamed files of this write task, gathered with the others' into cemr_ids.jsonl at the end
        other = bp.ShardSink(tmp_path, fmt, rows_per_shard=10)
        other.write([_block(["c:1"], ["无。"], [[]], [1])], SimpleNamespace(task_idx=8))
        assert bp.finish_brat(tmp_path, ["症状和体征"], [got]) == 4
        assert read_id_map(tmp_path) == {**{n: i for i, n in names.items()}, file_stem("c:1"): "c:1"}
        assert not (tmp_path / bp.NAMES_DIR).exists()
        conf = (tmp_path / "annotation.conf").read_text(encoding="utf-8")
        assert conf.startswith(f"[entities]\n{storage_type('症状和体征')}\nDIS\n")
        return
    assert rows[0] == {"id": "a:1", "text": "患者有糖尿病。", "entities": [
        {"start": 3, "end": 6, "type": "DIS", "mention": "糖尿病", "confidence": 0.987654}]}
    assert [r["id"] for r in rows] == ["a:1", "b:1", "a:2"] and not list(tmp_path.glob(".*"))


def test_the_manifest_accounts_for_every_document_and_a_loss_is_an_error():
    reads = {"a.txt": {"read": 3, "kept": 2, "rejected": 1, "reasons": {"empty": 1}},
             "b.jsonl": {"read": 4, "kept": 4, "rejected": 0, "reasons": {}}}
    shards = [{"name": "part-000001.jsonl", "documents": 4, "inputs": {0: 1, 1: 3}},
              {"name": "part-000000.jsonl", "documents": 2, "inputs": {0: 1, 1: 1}}]
    manifest = bp.build_manifest(reads, shards, "jsonl", "/m")
    assert manifest["documents"] == {"read": 7, "kept": 6, "rejected": 1, "written": 6}
    assert manifest["inputs"]["a.txt"]["written"] == 2 and manifest["inputs"]["b.jsonl"]["reasons"] == {}
    bp.check_manifest(manifest)
    lost = bp.build_manifest(reads, shards[:1], "jsonl", "/m")
    with pytest.raises(bp.BatchPredictError, match=r"a.txt: 2 kept, 1 written; b.jsonl: 4 kept, 3 written"):
        bp.check_manifest(lost)


# ----------------------------------------------------------------------------------------------
# The pipeline on a local Ray instance
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


def _cfg(*overrides):
    from cemr.config import load_config

    return load_config(None, ["cluster.actors=1", "cluster.actor_num_cpus=0.5", "cluster.batch_size=3",
                              "cluster.rows_per_shard=4", *overrides])


@pytest.mark.slow
@pytest.mark.ray
def test_the_pipeline_tags_every_document_as_the_one_inference_path_and_writes_a_manifest(
        ray_local, model_dir, tmp_path):
    from cemr.inference import tag_records
    from cemr.predictor import Predictor

    notes = _notes(tmp_path / "in", "notes.txt")
    records = tmp_path / "in" / "more.jsonl"
    texts = [f"第{i}天复查，患者有高血压，服用阿司匹林治疗。" for i in range(9)]
    records.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "pred"
    res = bp.predict_to_shards([str(notes), str(records)], out, model_dir, _cfg(), log=lambda m: None)

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["documents"] == {"read": 12, "kept": 11, "rejected": 1, "written": 11} == res["documents"]
    assert manifest["inputs"][str(notes)]["reasons"] == {"empty": 1}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(s["name"] for s in manifest["shards"])]
    assert len(manifest["shards"]) >= 2  # at least rows_per_shard=4 documents each but the last
    rows = [json.loads(line) for s in manifest["shards"] for line in
            (out / s["name"]).read_text(encoding="utf-8").splitlines()]
    assert [len((out / s["name"]).read_text(encoding="utf-8").splitlines()) for s in manifest["shards"]] == \
        [s["documents"] for s in manifest["shards"]]
    by_text = {r["text"]: r for r in rows}
    assert sorted(by_text) == sorted(texts + ["患者有糖尿病，服用胰岛素治疗。", "今日复查肺炎好转。"])
    reference = tag_records(Predictor.load(model_dir), list(by_text))
    assert sum(len(r) for r in reference) > 5  # the model finds entities
    for text, ref in zip(by_text, reference):
        assert [(e["start"], e["end"], e["type"], e["mention"]) for e in by_text[text]["entities"]] == \
            [(e["start"], e["end"], e["type"], text[e["start"]:e["end"]]) for e in ref]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left


@pytest.mark.slow
@pytest.mark.ray
def test_the_pipeline_writes_brat_that_brat_opens_and_the_reader_maps_back(ray_local, model_dir, tmp_path):
    from cemr.corpus.brat_names import original_type
    from cemr.corpus.readers import read_documents
    from cemr.inference import tag_records
    from cemr.predictor import Predictor

    notes = _notes(tmp_path / "in", "notes.txt", "".join(f"第{i}天复查，患者有高血压，服用阿司匹林治疗。\n" for i in range(7)))
    out = tmp_path / "pred"
    res = bp.predict_to_shards([str(notes)], out, model_dir, _cfg(), out_format="brat", log=lambda m: None)
    assert res["documents"]["written"] == 7 and res["renamed"] == 7  # notes.txt:N -> notes.txt_N-<digest>
    assert not (out / bp.NAMES_DIR).exists() and not (out / bp.READS_DIR).exists()
    types = bp.model_types(model_dir)
    conf = (out / "annotation.conf").read_text(encoding="utf-8")
    assert conf.startswith("[entities]\n" + "".join(f"{storage_type(t)}\n" for t in types))
    ids = read_id_map(out)
    back = {ids.get(d.id, d.id): d for d in read_documents("brat", out)}
    assert sorted(back) == sorted(f"notes.txt:{n}" for n in range(1, 8))
    reference = tag_records(Predictor.load(model_dir), [d.text for d in back.values()])
    assert sum(len(r) for r in reference) > 3
    for d, ref in zip(back.values(), reference):
        assert [(s.start, s.end, original_type(s.type)) for s in d.spans] == \
            [(e["start"], e["end"], e["type"]) for e in ref]


@pytest.mark.slow
@pytest.mark.ray
def test_repeated_ids_stop_the_pipeline_before_tagging_and_leave_the_old_output(ray_local, model_dir, tmp_path):
    from cemr.outputs import OutputError

    a, b = _notes(tmp_path / "d1"), _notes(tmp_path / "d2")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(OutputError, match="already exists"):
        bp.predict_to_shards([str(a)], out, model_dir, _cfg(), log=lambda m: None)
    with pytest.raises(CorpusError, match=r"document id 'notes.txt:1' is also the id of a document of .*d1"):
        bp.predict_to_shards([str(a), str(b)], out, model_dir, _cfg(), overwrite=True, log=lambda m: None)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
