"""jobs.predict without Ray: the output (a directory of shards) and the model are checked before
anything is read or Ray starts, and inputs are read as `cemr predict` reads them (jobs.evaluate's
in-memory path). The streaming pipeline itself: tests/cluster/test_batch_predict.py."""
import argparse

import pytest

from cemr.corpus.document import CorpusError
from cemr.modeldir import ModelDirError
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


def test_the_output_is_a_directory_and_the_model_is_checked_before_ray_starts(tmp_path, monkeypatch):
    import cluster.bootstrap

    monkeypatch.setattr(cluster.bootstrap, "connect", lambda *a, **k: pytest.fail("Ray started"))
    note = _write(tmp_path)
    old = tmp_path / "pred.jsonl"
    old.write_text("{}\n", encoding="utf-8")
    with pytest.raises(OutputError, match="exists and is a file; --out names a directory"):
        job.main(_args(model=str(tmp_path), input=[str(note)], out=str(old), overwrite=True))
    (tmp_path / "old").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        job.main(_args(model=str(tmp_path), input=[str(note)], out=str(tmp_path / "old")))
    with pytest.raises(ModelDirError):  # tmp_path is no model directory
        job.main(_args(model=str(tmp_path), input=[str(note)], out=str(tmp_path / "pred")))
    assert not (tmp_path / "pred").exists()
    assert job.parser().parse_args(["--input", "x", "--out", "o", "--out-format", "parquet"]).out_format == "parquet"


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
