"""jobs.predict without Ray: the output is checked before anything is read, inputs are read as
`cemr predict` reads them, and the output appears complete or not at all."""
import argparse

import pytest

from cemr.corpus.document import CorpusError
from cemr.outputs import OutputError
from jobs import predict as job

NOTE = "患者有糖尿病，服用胰岛素治疗。\n今日复查肺炎好转。\n"


def _args(**kw):
    base = dict(config=None, overrides=[], model=None, input=[], input_format="auto", column=None,
                out=None, out_format="jsonl", overwrite=False, max_len=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_an_output_that_is_an_input_is_refused_before_anything_runs(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    with pytest.raises(OutputError, match="would overwrite the input"):
        job.main(_args(model=str(tmp_path), input=[str(note)], out=str(note), overwrite=True))
    assert note.read_text(encoding="utf-8") == NOTE


def test_inputs_with_one_document_id_are_refused(tmp_path):
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "note.txt").write_text(NOTE, encoding="utf-8")
    with pytest.raises(CorpusError, match="note.txt:1"):
        job.read_inputs([str(tmp_path / "d1" / "note.txt"), str(tmp_path / "d2" / "note.txt")], "auto", None)
    docs, acc = job.read_inputs([str(tmp_path / "d1" / "note.txt")], "auto", None)
    assert [d.id for d in docs] == ["note.txt:1", "note.txt:2"]
    assert acc[str(tmp_path / "d1" / "note.txt")]["format"] == "text"


def test_a_missing_prediction_leaves_no_output(tmp_path):
    docs, _ = job.read_inputs([str(_write(tmp_path))], "text", None)
    out = tmp_path / "p.jsonl"
    with pytest.raises(RuntimeError, match="without predictions"):
        job.write_predictions(docs, iter([(docs[0].id, [])]), out, "jsonl")
    assert not out.exists()
    with pytest.raises(RuntimeError, match="without predictions"):
        job.write_predictions(docs, iter([(docs[0].id, [])]), tmp_path / "brat", "brat")
    assert not (tmp_path / "brat").exists()
    assert job.write_predictions(docs, iter([(d.id, []) for d in docs]), out, "jsonl") == 2


def _write(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text(NOTE, encoding="utf-8")
    return p


def test_a_bad_input_exits_2_with_one_line(tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    code = job.cli(["--model", str(tmp_path), "--input", str(note), "--out", str(note)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input" in err and "Traceback" not in err
