"""prepare: splits, low-resource protocol, unlabeled dedup and leakage removal, accounting."""
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cemr.config import ConfigError, load_config
from cemr.corpus.dedup import normalize
from cemr.corpus.document import CorpusError
from cemr.corpus.sentences import split_document
from cemr.corpus.shards import SENTENCE_SCHEMA, count_rows, iter_records, iter_sentences
from cemr.demo import generate_demo
from cemr.prepare import REPORT_NAME, SPLITS, assign_splits, choose_labeled, prepare, record_key, stable_rank

DEMO = ["data.demo_documents=40", "data.demo_unlabeled=600", "data.demo_seed=3",
        "data.test_fraction=0.1", "cluster.rows_per_shard=150"]


def _check_accounting(report: dict, out: Path) -> None:
    """Every input record and every document is accounted for, and the report matches disk."""
    for entry in report["inputs"]:
        reader = entry.get("reader")
        if reader is not None:
            assert reader["read"] == reader["kept"] + reader["rejected"]
        if "removed" in entry:
            assert entry["documents"] == entry["kept"] + sum(entry["removed"].values())
            assert entry["sentences"] == entry["sentences_written"] + sum(
                entry["sentences_removed"].values())
        else:
            assert entry["documents"] == entry["used"] + sum(entry["rejected_by_prepare"].values())
    lab = report["labeled"]
    assert lab["train"] == lab["train_labeled"] + lab["train_heldout"]
    assert lab["documents"] == lab["train"] + lab["dev"] + lab["test"]
    for split in SPLITS:
        info = report["splits"][split]
        assert count_rows(out / split) == info["sentences"]
        assert pq.read_schema(sorted((out / split).glob("*.parquet"))[0]).names[:6] == \
            SENTENCE_SCHEMA.names
        if "entities" in info:
            counts = Counter(s.type for sent in iter_sentences(out / split) for s in sent.spans)
            assert {**counts, "total": sum(counts.values())} == info["entities"]
    assert report["sentences"] == {s: report["splits"][s]["sentences"] for s in SPLITS}
    assert json.loads((out / REPORT_NAME).read_text(encoding="utf-8")) == report


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = prepare(load_config(None, DEMO), out).to_dict()
    return out, report


def test_demo_run_writes_every_split_and_accounts_for_everything(demo_run):
    out, report = demo_run
    _check_accounting(report, out)
    lab = report["labeled"]
    assert (lab["documents"], lab["dev"], lab["test"], lab["train"]) == (40, 4, 4, 32)
    assert len(report["paths"]["unlabeled"]) >= 2  # 150 rows per shard
    demo_entry = next(e for e in report["inputs"] if e.get("tag") == "demo")
    assert demo_entry["documents"] == 600
    removed = report["dedup"]["documents_removed"]
    assert removed["exact"] > 0 and removed["near"] > 0
    assert removed.get("leakage", 0) + removed.get("train_duplicate", 0) > 0


def test_splits_are_disjoint_and_unlabeled_rows_carry_no_labels(demo_run):
    out, _ = demo_run
    ids = {split: {s.doc_id for s in iter_sentences(out / split)}
           for split in ("train", "dev", "test")}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"]
    assert not ids["dev"] & ids["test"]
    rows = list(iter_records(out / "unlabeled"))
    assert rows and all(s.spans == [] for s, _ in rows)
    assert {e["source"] for _, e in rows} == {"demo"}
    assert len({(s.doc_id, s.sent_id) for s, _ in rows}) == len(rows)


def test_no_unlabeled_text_duplicates_a_dev_or_test_text(demo_run):
    out, _ = demo_run
    evaluation = {normalize(s.text)
                  for split in ("dev", "test") for s in iter_sentences(out / split)}
    unlabeled = [normalize(s.text) for s in iter_sentences(out / "unlabeled")]
    assert not evaluation & set(unlabeled)
    assert len(unlabeled) == len(set(unlabeled))  # sentence-level exact dedup


def test_copies_of_labeled_records_never_reach_the_pool(demo_run):
    out, _ = demo_run
    corpus = generate_demo(40, 600, 3)
    copies = {f"demo:{d.id}" for d in corpus.unlabeled if d.meta["origin"] == "labeled_copy"}
    assert copies
    assert not copies & {s.doc_id for s in iter_sentences(out / "unlabeled")}


def test_same_config_same_output(demo_run, tmp_path):
    out, report = demo_run
    again = prepare(load_config(None, DEMO), tmp_path).to_dict()
    for split in SPLITS:
        a = pq.read_table(out / split)
        b = pq.read_table(tmp_path / split)
        assert a.equals(b), split
    strip = lambda r: {k: v for k, v in r.items() if k not in ("out_dir", "paths", "elapsed_s")}
    assert strip(again) == strip(report)


def test_labeled_fraction_hides_gold_in_heldout_only(tmp_path):
    full = prepare(load_config(None, [*DEMO, "data.demo_unlabeled=50"]), tmp_path / "full")
    low_cfg = load_config(None, [*DEMO, "data.demo_unlabeled=50", "data.labeled_fraction=0.25"])
    low = prepare(low_cfg, tmp_path / "low").to_dict()
    _check_accounting(low, tmp_path / "low")
    assert (low["labeled"]["train_labeled"], low["labeled"]["train_heldout"]) == (8, 24)
    train_full = {s.doc_id for s in iter_sentences(tmp_path / "full" / "train")}
    train_low = {s.doc_id for s in iter_sentences(tmp_path / "low" / "train")}
    heldout = list(iter_records(tmp_path / "low" / "heldout"))
    heldout_ids = {s.doc_id for s, _ in heldout}
    assert len(train_low) == 8 and not train_low & heldout_ids
    assert train_low | heldout_ids <= train_full and len(heldout_ids) >= 20
    assert {e["source"] for _, e in heldout} == {"heldout_gold"}
    # the unlabeled rows of held-out documents: same keys and texts, no spans
    pool = {(s.doc_id, s.sent_id): (s, e) for s, e in iter_records(tmp_path / "low" / "unlabeled")}
    docs = {d.id: d for d in generate_demo(40, 50, 3).labeled}
    for sent, _ in heldout:
        row, extras = pool[(sent.doc_id, sent.sent_id)]
        assert extras["source"] == "heldout" and row.spans == [] and row.text == sent.text
        gold = split_document(docs[sent.doc_id], 256)[sent.sent_id]
        assert (gold.text, gold.spans) == (sent.text, sent.spans)
    assert sum(bool(s.spans) for s, _ in heldout) > 0.5 * len(heldout)
    assert low["splits"]["heldout"]["entities"]["total"] > 0
    assert low["splits"]["dev"] == full.splits["dev"]  # dev does not depend on the fraction


def test_split_rule_is_seeded_exact_and_independent_of_input_order():
    ids = [f"doc-{i}" for i in range(100)]
    split = assign_splits(ids, 0.1, 0.2, seed=13)
    assert Counter(split.values()) == {"train": 70, "dev": 10, "test": 20}
    assert assign_splits(list(reversed(ids)), 0.1, 0.2, seed=13) == split
    assert assign_splits(ids, 0.1, 0.2, seed=14) != split
    assert Counter(assign_splits(ids[:5], 0.01, 0.0, seed=1).values()) == {"train": 4, "dev": 1}
    with pytest.raises(ValueError):
        assign_splits(ids[:2], 0.5, 0.5, seed=1)
    assert stable_rank(13, "split", "doc-1") == stable_rank(13, "split", "doc-1")
    labeled, heldout = choose_labeled(ids, 0.25, seed=13)
    assert (len(labeled), len(heldout)) == (25, 75) and not labeled & heldout
    assert choose_labeled(ids, 1.0, seed=13) == (set(ids), set())
    assert len(choose_labeled(ids[:3], 0.01, seed=13)[0]) == 1


def test_ccks2017_sections_of_one_record_stay_together():
    """CCKS2017 documents are section texts ``<section>-<record>``: a dev (or held-out) record must
    not have its other sections in train, or dev F1 is scored on patients the model has read."""
    record = record_key("ccks2017")
    assert record("病史特点-118") == "118" and record_key("yidu") is None
    ids = [f"{sec}-{r}" for r in range(40) for sec in ("一般项目", "病史特点", "出院情况", "诊疗经过")]
    split = assign_splits(ids, 0.1, 0.1, seed=13, record=record)
    roles = {}
    for doc_id, role in split.items():
        roles.setdefault(record(doc_id), set()).add(role)
    assert all(len(r) == 1 for r in roles.values())
    assert Counter(next(iter(r)) for r in roles.values()) == {"train": 32, "dev": 4, "test": 4}
    assert Counter(split.values()) == {"train": 128, "dev": 16, "test": 16}
    by_doc = assign_splits(ids, 0.1, 0.1, seed=13)
    assert any(len({by_doc[f"{sec}-{r}"] for sec in ("一般项目", "病史特点", "出院情况", "诊疗经过")}) > 1
               for r in range(40))
    labeled, heldout = choose_labeled(ids, 0.25, seed=13, record=record)
    assert len(labeled) == 40 and {record(i) for i in labeled}.isdisjoint({record(i) for i in heldout})


# ---------------------------------------------------------------------------------------------
# A tiny hand-made jsonl corpus with known problems
# ---------------------------------------------------------------------------------------------


def _record(doc) -> str:
    ents = [{"start": s.start, "end": s.end, "type": s.type} for s in doc.spans]
    return json.dumps({"id": doc.id, "text": doc.text, "entities": ents}, ensure_ascii=False)


@pytest.fixture
def tiny(tmp_path):
    corpus = generate_demo(17, 6, seed=11)
    train, dev = corpus.labeled[:12], corpus.labeled[12:15]
    lines = [_record(d) for d in train]
    lines.insert(4, '{"id": "broken", "text": ')  # bad JSON: rejected by the reader
    lines.append(_record(train[0]))  # a repeated id: rejected by the reader
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text("\n".join(_record(d) for d in dev) + "\n", encoding="utf-8")
    u1, u2 = corpus.labeled[15].text, corpus.labeled[16].text  # records never labeled here
    assert min(len(u1), len(u2)) >= 150
    mid = len(u1) // 2
    near = u1[:mid] + ("零" if u1[mid] != "零" else "壹") + u1[mid + 1:]
    dev_sentence = split_document(dev[0], 256)[1].text
    unlabeled = [
        u1,  # kept
        " ".join(u1[i:i + 40] for i in range(0, len(u1), 40)),  # exact (spaces only)
        "",  # empty line: rejected by the reader
        dev[1].text,  # leakage
        near,  # near
        train[3].text,  # train_duplicate
        "新的句子，未见于别处。" + dev_sentence + "另一个新句子出现在这里。",  # kept; one leaked sentence
        u2,  # kept
    ]
    (tmp_path / "unlabeled.txt").write_text("\n".join(unlabeled) + "\n", encoding="utf-8")
    extra = [{"content": d.text} for d in corpus.unlabeled]
    (tmp_path / "more.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in extra) + "\n", encoding="utf-8")
    cfg = [
        "data.format=jsonl",
        f"data.train={tmp_path / 'train.jsonl'}",
        f"data.dev={tmp_path / 'dev.jsonl'}",
        f"data.unlabeled=[{{path: {tmp_path / 'unlabeled.txt'}}}, "
        f"{{path: {tmp_path / 'more.jsonl'}, column: content}}]",
        "data.max_rejected=0.2",  # 2 of the 14 train records are rejected on purpose
    ]
    return tmp_path, cfg, dev_sentence


def test_tiny_jsonl_corpus_counts(tiny):
    root, cfg, dev_sentence = tiny
    out = root / "out"
    report = prepare(load_config(None, cfg), out).to_dict()
    _check_accounting(report, out)
    train_in, dev_in, _, u0, u1 = report["inputs"]
    assert train_in["reader"]["read"] == 14 and train_in["reader"]["kept"] == 12
    assert train_in["reader"]["reasons"] == {"bad_json": 1, "duplicate_id": 1}
    assert dev_in["used"] == 3
    assert report["labeled"] | {"split_rule": None} == {
        "documents": 15, "train": 12, "train_labeled": 12, "train_heldout": 0, "dev": 3,
        "test": 0, "split_rule": None, "dev_test_documents_duplicating_train": 0}
    assert u0["reader"]["read"] == 8 and u0["reader"]["reasons"] == {"empty": 1}
    assert u0["kept"] == 3
    assert u0["removed"] == {"exact": 1, "near": 1, "leakage": 1, "train_duplicate": 1}
    assert u0["sentences_removed"].get("leakage_sentence") == 1
    assert u1["documents"] == 6 and u1["kept"] + sum(u1["removed"].values()) == 6
    texts = {s.text for s in iter_sentences(out / "unlabeled")}
    assert dev_sentence not in texts and "新的句子，未见于别处。" in texts
    sources = Counter(e["source"] for _, e in iter_records(out / "unlabeled"))
    assert set(sources) == {"u0", "u1"}
    doc_ids = {s.doc_id for s in iter_sentences(out / "unlabeled")}
    assert "u0:unlabeled.txt:1" in doc_ids and all(d.startswith(("u0:", "u1:")) for d in doc_ids)
    assert report["splits"]["test"]["sentences"] == 0 and count_rows(out / "test") == 0


def test_max_unlabeled_stops_reading(tiny):
    root, cfg, _ = tiny
    report = prepare(load_config(None, [*cfg, "data.max_unlabeled=2"]), root / "out").to_dict()
    _check_accounting(report, root / "out")
    u0, u1 = report["inputs"][-2:]
    assert u0["kept"] == 2 and "stopped" in u0
    # u1 (kept), exact copy, dev copy, near copy, train copy, the mixed text (kept): then stop;
    # the reader read those 6 lines and the empty one, never the last line
    assert u0["documents"] == 6 and u0["reader"]["read"] == 7
    assert "skipped" in u1 and u1["documents"] == 0
    assert report["splits"]["unlabeled"]["documents"] == 2


def test_rerun_replaces_the_output(tiny):
    root, cfg, _ = tiny
    prepare(load_config(None, cfg), root / "out", rows_per_shard=2)
    report = prepare(load_config(None, cfg), root / "out").to_dict()
    _check_accounting(report, root / "out")
    assert len(list((root / "out" / "unlabeled").glob("*.parquet"))) == 1


def test_bad_configurations_fail_before_writing(tiny, tmp_path):
    root, cfg, _ = tiny
    with pytest.raises(ConfigError, match="built-in"):
        prepare(load_config(None, [f"data.train={root / 'train.jsonl'}"]), tmp_path / "a")
    with pytest.raises(CorpusError, match="no such"):
        prepare(load_config(None, [*cfg, f"data.unlabeled=[{{path: {root / 'missing'}}}]"]),
                tmp_path / "b")
    assert not (tmp_path / "b" / REPORT_NAME).exists() and not (tmp_path / "b" / "train").exists()
    with pytest.raises(ConfigError, match="not a labeled format"):
        prepare(load_config(None, ["data.format=text", f"data.train={root}"]), tmp_path / "c")
    with pytest.raises(ConfigError, match="split"):
        prepare(load_config(None, ["data.demo_documents=2", "data.dev_fraction=0.5",
                                   "data.test_fraction=0.4"]), tmp_path / "d")


@pytest.mark.slow
def test_real_ccks2017_with_its_unlabeled_sections(tmp_path):
    from cemr.config import data_dir

    root = Path(data_dir()) / "ccks2017"
    cfg = load_config(None, [
        "data.format=ccks2017", f"data.train={root / 'train'}", "data.test_fraction=0.1",
        f"data.unlabeled=[{{path: {root / 'unlabeled' / 'unlabeled-2'}, per_line: false}}]",
        "data.max_unlabeled=1500",
    ])
    report = prepare(cfg, tmp_path).to_dict()
    _check_accounting(report, tmp_path)
    assert report["labeled"]["documents"] == 958
    splits = report["splits"]
    assert sum(splits[s]["entities"]["total"] for s in ("train", "dev", "test")) == 24783
    record = record_key("ccks2017")
    records = {split: {record(s.doc_id) for s in iter_sentences(tmp_path / split)}
               for split in ("train", "dev", "test")}
    assert (len(records["dev"]), len(records["test"])) == (24, 24)  # 10% of the 240 records each
    assert not records["dev"] & records["train"] and not records["test"] & records["train"]
    assert not records["dev"] & records["test"]
    assert splits["unlabeled"]["documents"] == 1500
    # the README warns that unlabeled sections repeat each other and the training records
    removed = report["dedup"]["documents_removed"]
    assert removed.get("exact", 0) + removed.get("near", 0) > 0
    assert removed.get("train_duplicate", 0) + removed.get("leakage", 0) > 0


def test_rejection_policy_stops_a_run_before_writing(tiny, tmp_path):
    root, cfg, _ = tiny
    default = [c for c in cfg if not c.startswith("data.max_rejected")]
    with pytest.raises(CorpusError, match=r"data\.train .*train\.jsonl: 2 of 14 records rejected "
                                          r"\(14\.29%\), more than data\.max_rejected=0\.01"):
        prepare(load_config(None, default), tmp_path / "a")
    assert not (tmp_path / "a" / "train").exists()
    with pytest.raises(CorpusError, match=r"data\.strict is set"):
        prepare(load_config(None, [*cfg, "data.strict=true"]), tmp_path / "b")
    (root / "dev.jsonl").write_text('{"id": "x", "text": "无", "entities": [], "spans": []}\n',
                                    encoding="utf-8")
    with pytest.raises(CorpusError, match=r"(?s)data\.dev .*nothing could be read: 1 of 1 records.*"
                                          r"unknown key\(s\) 'spans'"):
        prepare(load_config(None, [*cfg, "data.max_rejected=1"]), tmp_path / "c")


def test_labeled_format_must_fit_and_auto_detects(tiny, tmp_path):
    root, cfg, _ = tiny
    with pytest.raises(CorpusError, match="format yidu does not fit: it looks like jsonl"):
        prepare(load_config(None, [*cfg, "data.format=yidu"]), tmp_path / "a")
    with pytest.raises(CorpusError, match="no labels found"):
        prepare(load_config(None, [*cfg, f"data.dev={root / 'unlabeled.txt'}"]), tmp_path / "b")
    auto = load_config(None, cfg)
    auto.data.format = "auto"  # set past the config's validation, which may not list auto yet
    report = prepare(auto, tmp_path / "c").to_dict()
    train_in = report["inputs"][0]
    assert train_in["format"] == "jsonl" and train_in["detected"].startswith("detected jsonl")
    assert train_in["reader"]["kept"] == 12


def test_long_loops_show_progress_on_stderr_and_stdout_stays_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CEMR_QUIET", raising=False)
    monkeypatch.setenv("CEMR_PROGRESS", "1")  # bars as on a terminal
    capsys.readouterr()
    report = prepare(load_config(None, [*DEMO, "data.demo_unlabeled=60"]), tmp_path).to_dict()
    captured = capsys.readouterr()
    for bar in ("prepare: reading the demo corpus", "prepare: writing train", "prepare: writing dev",
                "prepare: dedup index", "prepare: unlabeled pool"):
        assert bar in captured.err, bar
    assert captured.out == ""
    _check_accounting(report, tmp_path)


def test_the_near_duplicate_threshold_is_a_config_key(tmp_path):
    strict = prepare(load_config(None, [*DEMO, "data.dedup_threshold=1.0"]), tmp_path / "a").to_dict()["dedup"]
    loose = prepare(load_config(None, [*DEMO, "data.dedup_threshold=0.3"]), tmp_path / "b").to_dict()["dedup"]
    assert (strict["threshold"], loose["threshold"]) == (1.0, 0.3)
    assert sum(loose["documents_removed"].values()) > sum(strict["documents_removed"].values())
