"""``cemr predict`` / ``cemr evaluate`` as a user runs them: outputs never destroy an input, never
appear half-written, are replaced only when asked; duplicate ids, wrong formats and run directories
passed as models are clear errors (exit status 2, one line, no traceback)."""
import io
import json

import pytest

from cemr.cli import main
from cemr.corpus.document import CorpusError
from cemr.inference import predict_files
from cemr.outputs import OutputError
from tagger_fakes import tiny_documents, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


NOTE = "患者有糖尿病，服用胰岛素治疗。\n今日复查肺炎好转。\n"


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(model_dir, tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", note)
    assert code == 2 and "would overwrite the input" in err and "Traceback" not in err
    assert note.read_text(encoding="utf-8") == NOTE
    # --overwrite does not make an input writable either; nor a path reaching it another way
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", tmp_path / "." / "notes.txt",
                       "--overwrite")
    assert code == 2 and note.read_text(encoding="utf-8") == NOTE
    # BRAT output inside an input directory
    code, _, err = cli(capsys, "predict", "--model", model_dir, tmp_path, "--out", tmp_path / "brat",
                       "--out-format", "brat")
    assert code == 2 and "would overwrite the input" in err and not (tmp_path / "brat").exists()


def test_an_existing_output_is_replaced_only_with_overwrite(model_dir, tmp_path, capsys):
    note = tmp_path / "in" / "notes.txt"
    note.parent.mkdir()
    note.write_text(NOTE, encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    out.write_text("keep me\n", encoding="utf-8")
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", out)
    assert code == 2 and "already exists (pass --overwrite" in err
    assert out.read_text(encoding="utf-8") == "keep me\n"
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", out, "--overwrite")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["notes.txt:1", "notes.txt:2"]
    # a directory where a file is asked for (and the reverse): a message, not IsADirectoryError
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", tmp_path / "in2", "--overwrite")
    assert code == 0
    (tmp_path / "adir").mkdir()
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", tmp_path / "adir")
    assert code == 2 and "is a directory" in err and "Traceback" not in err
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", out, "--out-format", "brat")
    assert code == 2 and "is a file" in err


def test_brat_output_directory_is_complete_and_replaced_only_with_overwrite(model_dir, tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    out = tmp_path / "brat"
    assert cli(capsys, "predict", "--model", model_dir, note, "--out", out, "--out-format", "brat")[0] == 0
    assert len(list(out.glob("*.ann"))) == 2
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", out, "--out-format", "brat")
    assert code == 2 and "already exists" in err
    assert cli(capsys, "predict", "--model", model_dir, note, "--out", out, "--out-format", "brat",
               "--overwrite")[0] == 0
    assert len(list(out.glob("*.ann"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".brat.")]  # no temporary left


def test_two_inputs_with_one_document_id_fail_before_any_output_exists(model_dir, tmp_path, capsys):
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "note.txt").write_text(NOTE, encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    code, _, err = cli(capsys, "predict", "--model", model_dir, tmp_path / "d1" / "note.txt",
                       tmp_path / "d2" / "note.txt", "--out", out)
    assert code == 2 and "note.txt:1" in err and "also the id of a document" in err
    assert not out.exists()


def test_a_failure_while_tagging_leaves_no_output_and_keeps_the_old_one(model_dir, tmp_path, monkeypatch):
    from cemr.predictor import Predictor

    note = tmp_path / "notes.txt"
    note.write_text(NOTE * 3, encoding="utf-8")
    calls = {"n": 0}
    real = Predictor.predict_sentences

    def flaky(self, texts, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom in step 2")
        return real(self, texts, *a, **k)

    monkeypatch.setattr(Predictor, "predict_sentences", flaky)
    out = tmp_path / "pred.jsonl"
    with pytest.raises(RuntimeError, match="boom"):
        predict_files(model_dir, [str(note)], out, step=1, log=lambda m: None)
    assert not out.exists()
    out.write_text("old\n", encoding="utf-8")
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        predict_files(model_dir, [str(note)], out, step=1, overwrite=True, log=lambda m: None)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "pred.jsonl"]  # no temporary left


def test_dash_reads_standard_input_and_writes_standard_output(model_dir, tmp_path):
    sink = io.StringIO()
    summary = predict_files(model_dir, ["-"], "-", stdin=io.BytesIO(NOTE.encode("utf-8")), stdout=sink,
                            log=lambda m: None)
    rows = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [r["id"] for r in rows] == ["stdin:1", "stdin:2"] and summary["documents"] == 2
    assert summary["inputs"]["-"]["kept"] == 2
    with pytest.raises(OutputError, match="standard output takes jsonl only"):
        predict_files(model_dir, ["-"], "-", out_format="brat", stdin=io.BytesIO(b""), log=lambda m: None)


def test_every_input_record_is_accounted_for(model_dir, tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("患者有糖尿病。\n\n   \n今日复查肺炎好转。\n", encoding="utf-8")
    summary = predict_files(model_dir, [str(note)], tmp_path / "p.jsonl", log=lambda m: None)
    acc = summary["inputs"][str(note)]
    assert summary["documents"] == acc["kept"] == 2
    assert acc["read"] == acc["kept"] + acc["rejected"] and acc["rejected"] == 2
    assert acc["reasons"] == {"empty": 2}


def test_an_input_with_no_readable_document_is_an_error(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, _, err = cli(capsys, "predict", "--model", model_dir, empty, "--out", tmp_path / "p.jsonl")
    assert code == 2 and "no document could be read" in err
    assert not (tmp_path / "p.jsonl").exists()


def test_a_run_directory_as_model_says_which_directory_to_pass(model_dir, tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    run = model_dir.parent
    code, _, err = cli(capsys, "predict", "--model", run, note, "--out", tmp_path / "p.jsonl")
    assert code == 2 and f"pass --model {model_dir}" in err and "Traceback" not in err
    code, _, err = cli(capsys, "evaluate", "--model", run, "--data", note, "--format", "jsonl")
    assert code == 2 and "run directory" in err


def _jsonl(path, docs):
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text,
                                        "entities": [s.to_dict() for s in d.spans]}, ensure_ascii=False) + "\n"
                            for d in docs), encoding="utf-8")
    return path


def test_evaluate_reports_the_readers_accounting_and_type_mismatch(model_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "gold.jsonl", tiny_documents(6))
    code, out, err = cli(capsys, "evaluate", "--model", model_dir, "--data", data, "--format", "jsonl", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["documents"] == 6 and rep["data"]["read"] == rep["data"]["kept"] == 6 and rep["warnings"] == []
    # a gold type the model does not know: warned, an error with --strict
    docs = tiny_documents(3)
    docs[0].spans.append(type(docs[0].spans[0])(0, 2, "BODY"))
    other = _jsonl(tmp_path / "other.jsonl", docs)
    code, out, err = cli(capsys, "evaluate", "--model", model_dir, "--data", other, "--format", "jsonl", "--json")
    assert code == 0 and "entity types differ" in err
    assert any("BODY" in w for w in json.loads(out)["warnings"])
    code, _, err = cli(capsys, "evaluate", "--model", model_dir, "--data", other, "--format", "jsonl", "--strict")
    assert code == 2 and "BODY" in err


def test_evaluate_refuses_a_corpus_it_could_not_read(model_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "gold.jsonl", tiny_documents(4))
    with open(data, "a", encoding="utf-8") as fh:
        fh.write('{"id": "bad", "text": "患者", "spans": [{"start": 0, "end": 2, "type": "DIS"}]}\n')
        fh.write('{"id": "cut", "text": "患者", "entities": [{"start": 0, "end": 9, "type": "DIS"}]}\n')
    code, _, err = cli(capsys, "evaluate", "--model", model_dir, "--data", data, "--format", "jsonl")
    assert code == 2 and "rejected" in err  # 1 of 6 rejected > --max-rejected 0 (default)
    code, out, err = cli(capsys, "evaluate", "--model", model_dir, "--data", data, "--format", "jsonl",
                         "--max-rejected", "0.5", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["data"]["rejected"] == 1 and rep["data"]["read"] == 6 and rep["documents"] == 5
    assert rep["data"]["spans_dropped"] == 1 and any("dropped 1" in w for w in rep["warnings"])
    raw = tmp_path / "raw.txt"
    raw.write_text(NOTE, encoding="utf-8")
    code, out, err = cli(capsys, "evaluate", "--model", model_dir, "--data", raw, "--format", "jsonl", "--json")
    assert code == 2 and out == ""  # never "F1 0.0 over 0 documents"


def test_check_unique_ids_names_both_sources(tmp_path):
    from cemr.inference import InputSource, check_unique_ids

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.txt").write_text("患者\n", encoding="utf-8")
    srcs = [InputSource(str(tmp_path / d / "x.txt"), str(tmp_path / d / "x.txt"), "text") for d in ("a", "b")]
    with pytest.raises(CorpusError, match=r"b/x.txt.*x.txt:1.*a/x.txt"):
        check_unique_ids(srcs)


def test_standard_output_gets_each_line_as_soon_as_its_document_is_tagged(model_dir, tmp_path, monkeypatch):
    from cemr.predictor import Predictor

    note = tmp_path / "notes.txt"
    note.write_text("患者有糖尿病。\n今日复查肺炎好转。\n服用胰岛素治疗。\n", encoding="utf-8")
    sink = io.StringIO()
    lines_before = []  # lines on stdout when each tagging call began
    real = Predictor.predict_sentences

    def spy(self, texts, *a, **k):
        lines_before.append((len(texts), sink.getvalue().count("\n")))
        return real(self, texts, *a, **k)

    monkeypatch.setattr(Predictor, "predict_sentences", spy)
    summary = predict_files(model_dir, [str(note)], "-", stdout=sink, step=1, log=lambda m: None)
    # the first document's line is out before the second document is tagged, and so on
    assert lines_before == [(1, 0), (1, 1), (1, 2)]
    assert summary["documents"] == 3 and len(sink.getvalue().splitlines()) == 3


def test_the_progress_bar_moves_inside_one_long_document(model_dir, tmp_path, monkeypatch):
    from cemr import inference

    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.updates = kw, []
            bars.append(self)

        def update(self, n=1):
            self.updates.append(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(inference, "progress", lambda **kw: Bar(**kw))
    long_text = "患者有糖尿病，服用胰岛素治疗。今日复查肺炎好转。" * 60  # one line: one document
    note = tmp_path / "record.txt"
    note.write_text(long_text + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    assert predict_files(model_dir, [str(note)], out, log=lambda m: None)["documents"] == 1
    (bar,) = bars
    assert bar.kw["total"] == len(long_text) and bar.kw["desc"] == "predict"
    assert len(bar.updates) > 1 and sum(bar.updates) == len(long_text)  # per batch, not per document
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


def test_predict_precision_reaches_the_predictor(model_dir, tmp_path, capsys, monkeypatch):
    from cemr.predictor import Predictor

    seen = []
    real = Predictor.load.__func__

    def load(cls, *a, **kw):
        seen.append(kw.get("precision"))
        return real(cls, *a, **kw)

    monkeypatch.setattr(Predictor, "load", classmethod(load))
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    code, _, err = cli(capsys, "predict", "--model", model_dir, note, "--out", tmp_path / "p.jsonl", "--precision", "bf16")
    assert code == 0, err
    assert seen == ["bf16"] and (tmp_path / "p.jsonl").read_text(encoding="utf-8").count("\n") == 2  # a line per text line
    with pytest.raises(SystemExit) as exc:  # argparse: a usage error
        cli(capsys, "predict", "--model", model_dir, note, "--out", tmp_path / "q.jsonl", "--precision", "fp8")
    assert exc.value.code == 2 and "fp8" in capsys.readouterr().err
