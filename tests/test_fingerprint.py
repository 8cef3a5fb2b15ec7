"""cemr.fingerprint and the stages of cemr.pipeline: a run directory's stage output is reused only
for the config and inputs that made it; otherwise the rerun is refused, naming what differs."""
import json

import pytest

import cemr.prepare
import cemr.pretrain
from cemr.config import load_config
from cemr.fingerprint import (
    MARKER,
    StaleStageError,
    differences,
    path_identity,
    prepare_fingerprint,
    pretrain_fingerprint,
)
from cemr.pipeline import RunLayout, build_components, prepare_data, pretrain_stage, stages_done

TINY = ["data.demo_documents=30", "data.demo_unlabeled=40", "data.max_sentence_len=64",
        "model.word2vec.dim=8", "model.word2vec.epochs=1", "model.bilm.enabled=false",
        "model.bert.enabled=false", "model.dictionary.enabled=false"]


def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


def _quiet(_msg):
    pass


def _no_call(name):
    def fail(*_a, **_k):
        pytest.fail(f"{name} ran again: the stage output should have been reused")
    return fail


def _fake_pretrain(calls):
    """Stands for pretrain_all (the stage logic is tested, not the training): writes the metrics."""
    def fake(texts, model_cfg, out_dir, **_kw):
        calls.append(model_cfg)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / cemr.pretrain.METRICS_FILE).write_text('{"word2vec.dim": 8.0}', encoding="utf-8")
        return {"word2vec.dim": 8.0}
    return fake


# ----------------------------------------------------------------------------------------------
# Pure parts
# ----------------------------------------------------------------------------------------------


def test_path_identity_sees_a_changed_added_or_removed_file_without_reading_it(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("患者头痛", encoding="utf-8")
    first = path_identity(d)
    assert first["exists"] and first["files"] == 1 and path_identity(d) == first
    (d / "b.txt").write_text("x", encoding="utf-8")
    second = path_identity(d)
    assert second["files"] == 2 and second["stat_digest"] != first["stat_digest"]
    (d / "b.txt").unlink()
    (d / "a.txt").write_text("患者头痛三天", encoding="utf-8")
    assert path_identity(d)["stat_digest"] != first["stat_digest"]
    assert path_identity(tmp_path / "nowhere") == {"path": str(tmp_path / "nowhere"), "exists": False}
    assert path_identity(None) is None


def test_differences_name_the_keys_and_the_parts():
    base = _cfg()
    recorded = pretrain_fingerprint(base, "p1").to_dict()
    assert differences(recorded, pretrain_fingerprint(base, "p1")) == []
    diff = differences(recorded, pretrain_fingerprint(_cfg("model.word2vec.window=3", "train.seed=1"), "p1"))
    assert "model.word2vec.window: 5 -> 3" in diff and "train.seed: 42 -> 1" in diff
    assert differences(recorded, pretrain_fingerprint(base, "p2")) == ["word2vec: built from another prepare output"]
    assert differences(recorded, pretrain_fingerprint(_cfg("model.bilm.enabled=true"), "p1")) == [
        "bilm: not in this stage's output (it was made without it)"]
    old = {**recorded, "version": 0}
    assert "stage format version 0 -> 2" in differences(old, pretrain_fingerprint(base, "p1"))[0]


def test_pretraining_keys_that_only_load_a_featurizer_are_not_part_of_it():
    on = ["model.bilm.enabled=true", "model.bert.enabled=true"]
    a = pretrain_fingerprint(_cfg(*on), "p").to_dict()
    assert differences(a, pretrain_fingerprint(_cfg(*on, "model.bert.freeze=false"), "p")) == []
    assert differences(a, pretrain_fingerprint(_cfg(*on, "model.bert.mask_prob=0.2"), "p")) == [
        "model.bert.mask_prob: 0.15 -> 0.2"]
    # rows per shard cut the same rows into other files: not part of prepare's fingerprint
    prepared = prepare_fingerprint(_cfg()).to_dict()
    assert differences(prepared, prepare_fingerprint(_cfg("cluster.rows_per_shard=7"))) == []


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------


def test_prepare_is_reused_for_the_same_config_and_refused_for_another(tmp_path, monkeypatch):
    layout = RunLayout.of(tmp_path / "run")
    first = prepare_data(_cfg(), layout, _quiet)
    assert (layout.data / MARKER).is_file() and first["sentences"]["train"] > 0
    monkeypatch.setattr(cemr.prepare, "prepare", _no_call("prepare"))
    messages = []
    assert prepare_data(_cfg("train.epochs=1", "cluster.rows_per_shard=7"), layout, messages.append) == first
    assert any("already prepared" in m for m in messages)
    with pytest.raises(StaleStageError, match=r"data: the prepare output there was made from another config.*"
                                              r"data\.demo_seed: 7 -> 8.*another run_dir"):
        prepare_data(_cfg("data.demo_seed=8"), layout, _quiet)


def test_prepare_of_another_data_source_into_the_same_run_dir_is_refused(tmp_path, monkeypatch):
    from cemr.corpus.writers import write_jsonl
    from cemr.demo import generate_demo

    corpus = tmp_path / "train.jsonl"
    write_jsonl(generate_demo(30, 0, 3).labeled, corpus)
    layout = RunLayout.of(tmp_path / "run")
    prepare_data(_cfg(), layout, _quiet)  # the built-in demo
    jsonl = _cfg("data.format=jsonl", f"data.train={corpus}")
    with pytest.raises(StaleStageError, match=r"data\.format: \"demo\" -> \"jsonl\".*data\.train: null"):
        prepare_data(jsonl, layout, _quiet)

    other = RunLayout.of(tmp_path / "run2")
    prepare_data(jsonl, other, _quiet)
    prepare_data(jsonl, other, _quiet)  # same file, untouched: reused
    with corpus.open("a", encoding="utf-8") as fh:  # the input changed on disk
        fh.write(json.dumps({"id": "extra", "text": "患者头痛", "entities": []}, ensure_ascii=False) + "\n")
    monkeypatch.setattr(cemr.prepare, "prepare", _no_call("prepare"))
    with pytest.raises(StaleStageError, match=r"input data\.train: bytes \d+ -> \d+"):
        prepare_data(jsonl, other, _quiet)


def test_a_prepared_dir_from_before_fingerprints_is_refused(tmp_path, monkeypatch):
    layout = RunLayout.of(tmp_path / "run")
    layout.data.mkdir(parents=True)
    (layout.data / "prepare_report.json").write_text('{"sentences": {"train": 3}}', encoding="utf-8")
    monkeypatch.setattr(cemr.prepare, "prepare", _no_call("prepare"))
    with pytest.raises(StaleStageError, match=r"prepare output without fingerprint\.json.*remove .*run"):
        prepare_data(_cfg(), layout, _quiet)
    (layout.data / MARKER).write_text("{not json", encoding="utf-8")
    with pytest.raises(StaleStageError, match=r"fingerprint\.json: unreadable stage marker"):
        prepare_data(_cfg(), layout, _quiet)


# ----------------------------------------------------------------------------------------------
# pretrain and components
# ----------------------------------------------------------------------------------------------


def test_pretrain_is_reused_only_for_the_same_keys_and_prepared_data(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cemr.pretrain, "pretrain_all", _fake_pretrain(calls))
    layout = RunLayout.of(tmp_path / "run")
    on = ["model.bilm.enabled=true"]
    prepare_data(_cfg(*on), layout, _quiet)
    assert not stages_done(_cfg(*on), layout)
    pretrain_stage(_cfg(*on), layout, log=_quiet)
    assert len(calls) == 1 and (layout.pretrain / MARKER).is_file() and stages_done(_cfg(*on), layout)
    assert pretrain_stage(_cfg(*on, "train.epochs=1"), layout, log=_quiet) == {"word2vec.dim": 8.0}
    assert pretrain_stage(_cfg(), layout, log=_quiet)  # BiLM off: what was pretrained still serves
    assert len(calls) == 1
    for bad, named in ((["model.bilm.hidden_dim=8"], r"model\.bilm\.hidden_dim: 128 -> 8"),
                       (["model.bert.enabled=true"], r"bert: not in this stage's output"),
                       (["train.seed=1"], r"train\.seed: 42 -> 1")):
        with pytest.raises(StaleStageError, match=r"pretrain: the pretrain output there .*" + named):
            pretrain_stage(_cfg(*on, *bad), layout, log=_quiet)
        with pytest.raises(StaleStageError, match=named):
            stages_done(_cfg(*on, *bad), layout)
    assert len(calls) == 1

    # the data were prepared again (another config, after data/ was removed): the pretraining is stale
    import shutil

    shutil.rmtree(layout.data)
    prepare_data(_cfg(*on, "data.demo_seed=8"), layout, _quiet)
    with pytest.raises(StaleStageError, match=r"word2vec: built from another prepare output"):
        pretrain_stage(_cfg(*on, "data.demo_seed=8"), layout, log=_quiet)


def test_a_pretrain_dir_from_before_fingerprints_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cemr.pretrain, "pretrain_all", _no_call("pretrain_all"))
    layout = RunLayout.of(tmp_path / "run")
    prepare_data(_cfg(), layout, _quiet)
    layout.pretrain.mkdir()
    (layout.pretrain / cemr.pretrain.METRICS_FILE).write_text("{}", encoding="utf-8")
    with pytest.raises(StaleStageError, match=r"pretrain output without fingerprint\.json"):
        pretrain_stage(_cfg(), layout, log=_quiet)


def test_pretrain_needs_a_finished_prepare(tmp_path):
    with pytest.raises(StaleStageError, match=r"data/fingerprint\.json: missing; the prepare stage has not finished"):
        pretrain_stage(_cfg(), RunLayout.of(tmp_path / "run"), log=_quiet)


def test_components_are_read_back_and_refused_without_their_marker(tmp_path):
    layout = RunLayout.of(tmp_path / "run")
    cfg = _cfg()
    prepare_data(cfg, layout, _quiet)
    pretrain_stage(cfg, layout, log=_quiet)  # word2vec only: a second or so
    first = build_components(cfg, layout, log=_quiet)
    assert (layout.components / MARKER).is_file()
    again = build_components(cfg, layout, log=_quiet)
    assert again.vocab.chars == first.vocab.chars and again.labels.to_list() == first.labels.to_list()
    (layout.components / MARKER).unlink()  # components/ as written before fingerprints
    with pytest.raises(StaleStageError, match=r"components output without fingerprint\.json"):
        build_components(cfg, layout, log=_quiet)


def test_a_char_embedding_that_cannot_start_from_word2vec_is_said(tmp_path):
    layout = RunLayout.of(tmp_path / "run")
    cfg = _cfg("model.char_dim=12")  # word2vec dim 8 (TINY)
    prepare_data(cfg, layout, _quiet)
    pretrain_stage(cfg, layout, log=_quiet)
    said = []
    build_components(cfg, layout, log=said.append)
    assert any("model.char_dim 12 != word2vec dim 8" in m and "starts random" in m for m in said)
    said.clear()
    build_components(_cfg("model.char_dim=8"), layout, log=said.append)
    assert not any("starts random" in m for m in said)
