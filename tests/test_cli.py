"""The ``cemr`` command line end to end: stats on the real data sets, and train -> evaluate -> predict on a
tiny demo corpus with every feature switched on (small dims)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cemr.cli import main
from cemr.config import data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(data_dir())

TINY = [
    "data.demo_documents=40", "data.demo_unlabeled=150", "data.max_sentence_len=64",
    "model.char_dim=16", "model.gru_hidden=16", "model.attention_heads=2", "model.word2vec.dim=16",
    "model.bilm.embedding_dim=16", "model.bilm.hidden_dim=16", "model.bilm.epochs=1",
    "model.bert.hidden_size=16", "model.bert.intermediate_size=32", "model.bert.heads=2", "model.bert.layers=1",
    "model.bert.pretrain_max_sentences=300", "model.dictionary.dim=8",
    "train.epochs=2", "train.batch_size=16",
]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_stats_ccks2017_matches_the_published_counts(capsys):
    code, out, _ = run_cli(capsys, "stats", "--format", "ccks2017", DATA / "ccks2017" / "train", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["documents"] == 958
    assert stats["entities"] == {"身体部位": 8942, "检查和检验": 7987, "症状和体征": 6486, "治疗": 853,
                                 "疾病和诊断": 515, "total": 24783}
    assert stats["errors"] == []


@pytest.mark.slow
def test_stats_yidu_matches_the_published_counts(capsys):
    code, out, _ = run_cli(capsys, "stats", "--format", "yidu", DATA / "yidu_s4k", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["documents"] == 1000
    assert stats["entities"]["total"] == 17653
    assert stats["entities"]["解剖部位"] == 8426
    assert stats["entities"]["影像检查"] == 969


def test_stats_reports_bad_input_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "发热三天", "entities": [{"start": 0, "end": 9, "type": "症状和体征"}]}\n'
                   "{not json\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "stats", "--format", "jsonl", bad, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["read"] == 2 and stats["rejected"] == 1
    assert any("bad.jsonl:2" in e or ("bad.jsonl" in e and ":2" in e) for e in map(str, stats["errors"]))


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "stats", "--format", "yidu", tmp_path / "nope")
    assert code == 2
    assert "nope" in err


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "cemr", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for cmd in ("stats", "prepare", "pretrain", "train", "evaluate", "predict", "demo"):
        assert cmd in out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import contextlib
    import io

    run = tmp_path_factory.mktemp("run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["train", "--out", str(run), *TINY]) == 0
    # `cemr train > report.json` is valid JSON: progress goes to stderr, the report alone to stdout
    assert json.loads(out.getvalue())["model"] == str(run / "model")
    assert "epoch 1/2" in err.getvalue()
    return run


@pytest.mark.slow
def test_train_writes_a_model_and_a_report(trained):
    report = json.loads((trained / "train_report.json").read_text(encoding="utf-8"))
    assert (trained / "model" / "config.json").is_file()
    assert set(report["dev"]) == {"micro", "per_type", "documents", "entities"}
    assert report["dev"]["entities"] > 0
    assert 0.0 <= report["dev"]["micro"]["f1"] <= 1.0
    # every feature of the paper was on and pretrained
    assert {"word2vec.vocab_size", "bilm.heldout_ppl_f", "bert.mlm_loss_after"} <= set(report["pretrain"])
    cfg = json.loads((trained / "model" / "config.json").read_text(encoding="utf-8"))
    assert set(cfg["featurizers"]) == {"bilm", "bert"} and cfg["dictionary"] is True


@pytest.mark.slow
def test_evaluate_and_predict_on_documents(trained, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--documents", "12", "--unlabeled", "5", "--seed", "3"]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "evaluate", "--model", trained / "model", "--format", "jsonl",
                           "--data", tmp_path / "demo" / "labeled.jsonl", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["documents"] == 12 and report["entities"] > 0
    assert report["micro"]["tp"] + report["micro"]["fn"] == report["entities"]

    code, _, _ = run_cli(capsys, "predict", "--model", trained / "model", tmp_path / "demo" / "labeled.jsonl",
                         "--input-format", "jsonl", "--out", tmp_path / "pred.jsonl")
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12
    for row in rows:
        for e in row["entities"]:
            assert row["text"][e["start"]:e["end"]] == e["mention"]
            assert 0.0 <= e["confidence"] <= 1.0

    code, _, _ = run_cli(capsys, "predict", "--model", trained / "model", tmp_path / "demo" / "labeled.jsonl",
                         "--input-format", "jsonl", "--out", tmp_path / "brat", "--out-format", "brat")
    assert code == 0
    assert len(list((tmp_path / "brat").glob("*.ann"))) == 12


# -- help, --quiet, progress on stderr ---------------------------------------------------------------


def _parsers(parser, name="cemr"):
    """Every (name, parser) of the command line: the top level and each (nested) subcommand."""
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_is_explained_with_its_default():
    import argparse

    from cemr.cli import build_parser

    walked = dict(_parsers(build_parser()))
    assert {"cemr stats", "cemr predict", "cemr review export", "cemr review import", "cemr demo"} <= set(walked)
    for name, parser in walked.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{what}: no help text"
            if action.default not in (None, argparse.SUPPRESS) and action.nargs != 0:
                assert f"(default: {action.default})" in text, f"{what}: default {action.default!r} not shown"
        if name != "cemr":
            assert "-q, --quiet" in text, f"{name}: no --quiet"


def test_quiet_goes_before_or_after_the_command():
    from cemr.cli import build_parser

    ap = build_parser()
    assert ap.parse_args(["-q", "stats", "x"]).quiet and ap.parse_args(["stats", "x", "--quiet"]).quiet
    assert ap.parse_args(["-q", "review", "import", "--format", "brat", "p", "--out", "o"]).quiet
    assert ap.parse_args(["review", "import", "--format", "brat", "p", "--out", "o", "-q"]).quiet
    assert not ap.parse_args(["stats", "x"]).quiet


def test_quiet_silences_informational_lines_not_errors(tmp_path, capsys):
    from cemr import progress

    data = tmp_path / "gold.jsonl"
    data.write_text('{"id": "a", "text": "发热三天", "entities": []}\n', encoding="utf-8")
    code, out, err = run_cli(capsys, "stats", data, "--json")
    assert code == 0 and "gold.jsonl: " in err  # what auto detection found
    code, quiet_out, err = run_cli(capsys, "stats", data, "--json", "-q")
    assert code == 0 and err == "" and json.loads(quiet_out) == json.loads(out)
    code, _, err = run_cli(capsys, "-q", "stats", "--format", "yidu", tmp_path / "nope")
    assert code == 2 and "nope" in err  # errors still print
    assert not progress.quiet()  # main() put the setting back


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tagger_fakes import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


def test_bars_go_to_stderr_and_stdout_holds_results_only(tiny_model, tmp_path, capsys, monkeypatch):
    from tagger_fakes import tiny_documents

    from cemr import progress

    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")  # bars as on a terminal (test_progress checks the TTY test)
    note = tmp_path / "notes.txt"
    note.write_text("患者有糖尿病，服用胰岛素治疗。\n今日复查肺炎好转。\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "predict", "--model", tiny_model, note, "--out", "-")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["notes.txt:1", "notes.txt:2"]
    assert "predict:" in err and "char" in err  # the bar
    assert '"documents": 2' in err  # the summary line

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": d.id, "text": d.text, "entities": [s.to_dict() for s in d.spans]},
                                       ensure_ascii=False) + "\n" for d in tiny_documents(4)), encoding="utf-8")
    code, out_eval, err = run_cli(capsys, "evaluate", "--model", tiny_model, "--data", gold, "--json")
    assert code == 0 and json.loads(out_eval)["documents"] == 4  # one JSON document, nothing else
    assert "evaluate:" in err

    code, quiet_out, err = run_cli(capsys, "predict", "-q", "--model", tiny_model, note, "--out", "-")
    assert code == 0 and quiet_out == out and err == ""
