"""benchmarks/gap_analysis.py: --data-only on a tiny demo config, --model on a tiny trained model."""
import importlib.util
import json
from pathlib import Path

import pytest

from cemr.corpus.document import Document, Span
from cemr.corpus.writers import write_jsonl

_spec = importlib.util.spec_from_file_location(
    "gap_analysis", Path(__file__).resolve().parents[1] / "benchmarks" / "gap_analysis.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

DEMO = str(Path(__file__).resolve().parents[1] / "ray_configs" / "experiments" / "demo.yaml")
# demo.yaml keeps 10% of gold train (labeled_fraction 0.1): --data-only compares with all of it
TINY = ["data.demo_documents=40", "data.demo_unlabeled=0", "data.dev_fraction=0.2", "data.test_fraction=0.2"]


def last_json(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_data_only_reproduces_the_prepared_split_and_accounts_for_every_mention(tmp_path, capsys):
    seed = 7
    out = bench.main(["--data-only", "--config", DEMO, "--keep", str(tmp_path / "run"), "--split-seeds", str(seed),
                      "--block-sweep", "--block", "4", *TINY, f"data.split_seed={seed}"])
    printed, text = last_json(capsys)
    assert printed["records"] == out["records"] == {"train": 24, "dev": 8, "test": 8}
    report = json.loads((tmp_path / "run" / "data" / "prepare_report.json").read_text())
    for split in ("dev", "test"):
        row = out["similarity"][f"{split} vs train"]["all"]
        # every sentence prepare wrote and every gold mention of the documents is counted
        assert row["sentences"]["sentences"] == report["splits"][split]["sentences"]
        assert row["mentions"]["mentions"] == report["splits"][split]["entities_in_documents"]
        m = row["mentions"]
        assert m["seen, same type"] + m["seen, other type only"] + m["unseen"] == m["mentions"]
        # the sweep at the config's own split seed gives the same figures as the main table
        assert out["split_seeds"][0][f"{split}_dup"] == row["sentences"]["exact_or_near_share"]
        assert out["split_seeds"][0][f"{split}_seen"] == m["seen_same_type_share"]
        assert out["split_seeds"][0][f"{split}_dup_mentions"] == row["sentences"]["exact_or_near_mention_share"]
    assert out["block"]["set"] == "last 4 records vs 24 others"
    assert len(out["blocks"]) == 10  # 40 records in blocks of 4
    lex = out["dictionary"]
    assert lex["folds"] == 5 and set(lex) >= {"train", "dev", "test"}
    assert lex["dev"]["all"]["gold"] <= report["splits"]["dev"]["entities_in_documents"]
    assert "## Templated text" in text and "dev vs train" in text


def test_a_heldout_set_is_compared_with_every_labeled_record(tmp_path, capsys):
    run = tmp_path / "run"
    bench.main(["--data-only", "--config", DEMO, "--keep", str(run), "--block", "0", *TINY])
    capsys.readouterr()
    # the dev documents are labeled records: as a "held-out" set each of their sentences and
    # mentions is found among all labeled records, which is what the comparison is with
    out = bench.main(["--data-only", "--config", DEMO, "--keep", str(run), "--block", "0", *TINY,
                      "--heldout", str(run / "data" / "documents" / "dev.jsonl")])
    row = out["similarity"]["heldout vs all labeled"]["all"]
    assert row["sentences"]["exact_share"] == 1.0 and row["mentions"]["seen_same_type_share"] == 1.0
    assert row["mentions"]["mentions"] == out["similarity"]["dev vs train"]["all"]["mentions"]["mentions"]
    assert out["block"] is None


def test_block_split_takes_the_last_records_and_a_reference_of_the_given_size(tmp_path):
    from cemr.config import load_config
    from cemr.pipeline import RunLayout, prepare_data

    cfg = load_config(DEMO, [*TINY, "data.labeled_fraction=1"])
    layout = RunLayout.of(tmp_path / "run")
    prepare_data(cfg, layout, log=lambda m: None)
    corpus = bench.Corpus(layout, "demo")
    records = corpus.records()
    block, ref = bench.block_split(corpus, 5, 24, 13)
    assert block == records[-5:] and len(ref) == 24 and not set(ref) & set(block)
    with pytest.raises(SystemExit, match="--block 30"):
        bench.block_split(corpus, 30, 24, 13)


def test_model_part_scores_every_span_into_one_category(tmp_path, capsys):
    from tagger_fakes import tiny_documents, tiny_model_dir

    model = tiny_model_dir(tmp_path / "model")
    docs = tiny_documents(6, seed=3)
    data = tmp_path / "gold.jsonl"
    write_jsonl(docs, data)
    # training mentions: 糖尿病 as DIS, 青霉素 as DIS (so a DRUG 青霉素 is "seen, other type only")
    train = tmp_path / "train.jsonl"
    write_jsonl([Document("t1", "糖尿病青霉素", [Span(0, 3, "DIS"), Span(3, 6, "DIS")])], train)
    out = bench.main(["--model", str(model), "--data", str(data), "--train", str(train)])
    printed, text = last_json(capsys)
    assert printed["all"] == out["all"]
    n_gold = sum(len(d.spans) for d in docs)
    assert out["all"]["gold"] == n_gold
    for name, groups in out["by"].items():
        assert sum(g["gold"] for g in groups.values()) == n_gold, name
        assert sum(g["pred"] for g in groups.values()) == out["all"]["pred"], name
    assert set(out["by"]) == {"type", "sentence length", "mention string in training",
                              "mention string in the model's lexicon", "training x lexicon"}
    seen = out["by"]["mention string in training"]
    assert seen["seen, same type"]["gold"] == sum(d.mention(s) == "糖尿病" for d in docs for s in d.spans)
    assert "unseen" in seen
    assert "## by type" in text


def test_model_part_puts_each_kind_of_error_in_its_category(tmp_path, capsys):
    from tagger_fakes import tiny_documents, tiny_model_dir

    model = tiny_model_dir(tmp_path / "model")
    docs = tiny_documents(6, seed=3)
    write_jsonl(docs, tmp_path / "clean.jsonl")
    assert bench.main(["--model", str(model), "--data", str(tmp_path / "clean.jsonl")])["micro_f1"] == 1.0
    capsys.readouterr()
    # the model tags these documents perfectly: edit the gold so that each error kind appears once
    def edit(doc, spans):
        return Document(doc.id, doc.text, spans)
    s0, s1, s2, s3 = (d.spans for d in docs[:4])
    other = {"DIS": "DRUG", "DRUG": "DIS"}
    edited = [
        edit(docs[0], [Span(s0[0].start, s0[0].end, other[s0[0].type]), *s0[1:]]),  # a type error
        edit(docs[1], [Span(s1[0].start, s1[0].end + 1, s1[0].type), *s1[1:]]),  # a boundary error
        edit(docs[2], s2[1:]),  # the model's first entity becomes spurious
        edit(docs[3], [*s3, Span(0, 2, "DIS")]),  # "患者": a gold span the model misses
        *docs[4:],
    ]
    write_jsonl(edited, tmp_path / "gold.jsonl")
    out = bench.main(["--model", str(model), "--data", str(tmp_path / "gold.jsonl")])
    a = out["all"]
    assert (a["type"], a["boundary"], a["boundary+type"], a["spurious"], a["missed"]) == (1, 1, 0, 1, 1)
    assert a["exact"] == 15 and a["gold"] == 18 and a["pred"] == 18


def test_model_part_without_training_data_says_so(tmp_path, capsys):
    from tagger_fakes import tiny_documents, tiny_model_dir

    model = tiny_model_dir(tmp_path / "model")
    data = tmp_path / "gold.jsonl"
    write_jsonl(tiny_documents(3), data)
    out = bench.main(["--model", str(model), "--data", str(data)])
    _, text = last_json(capsys)
    assert "mention string in training" not in out["by"]
    assert "no --train" in text


def test_arguments_are_checked(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--data-only"])
    assert "--data-only needs --config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "m"])
    assert "--model needs --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--data-only", "--config", "c", "--threshold", "0"])
    assert "--threshold" in capsys.readouterr().err
