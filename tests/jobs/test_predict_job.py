"""jobs.predict without Ray: inputs are given and read as `cemr predict` takes them (positional, the
format detected or checked), the output (a directory of shards), the model and the inputs' formats
are checked before Ray starts, and --device means what it means for `cemr predict` and
train.device. The streaming pipeline itself: tests/cluster/test_batch_predict.py."""
import argparse

import pytest

from cemr.corpus.document import CorpusError
from cemr.modeldir import ModelDirError
from cemr.outputs import OutputError
from jobs import predict as job

NOTE = "患者有糖尿病，服用胰岛素治疗。\n今日复查肺炎好转。\n"


def _args(**kw):
    base = dict(config=None, overrides=[], model=None, inputs=[], input_format="auto", column=None,
                out=None, out_format="jsonl", overwrite=False, max_len=None, device="auto")
    base.update(kw)
    return argparse.Namespace(**base)


def test_an_output_that_is_an_input_is_refused_before_anything_runs(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    with pytest.raises(OutputError, match="would overwrite the input"):
        job.main(_args(model=str(tmp_path), inputs=[str(note)], out=str(note), overwrite=True))
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
        job.main(_args(model=str(tmp_path), inputs=[str(note)], out=str(old), overwrite=True))
    (tmp_path / "old").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        job.main(_args(model=str(tmp_path), inputs=[str(note)], out=str(tmp_path / "old")))
    with pytest.raises(ModelDirError):  # tmp_path is no model directory
        job.main(_args(model=str(tmp_path), inputs=[str(note)], out=str(tmp_path / "pred")))
    assert not (tmp_path / "pred").exists()
    assert job.parser().parse_intermixed_args(["x", "--out", "o", "--out-format", "parquet"]).out_format == "parquet"


def _write(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text(NOTE, encoding="utf-8")
    return p


def test_a_bad_input_exits_2_with_one_line(tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text(NOTE, encoding="utf-8")
    code = job.cli(["--model", str(tmp_path), str(note), "--out", str(note)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input" in err and "Traceback" not in err


def _parse(*argv):
    return job.parser().parse_intermixed_args(list(argv))


def test_inputs_are_positional_as_for_cemr_predict_mixed_with_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.txt").write_text(NOTE, encoding="utf-8")  # an existing path is a path
    args = _parse("--model", "m", "notes.txt", "cluster.actors=4", "dir/", "--out", "o", "a=b.txt",
                  "--input", "old.txt", "train.device=cpu")
    assert args.inputs == ["notes.txt", "dir/", "a=b.txt", "old.txt"]  # positional ones, then --input
    assert args.overrides == ["cluster.actors=4", "train.device=cpu"]
    assert _parse("--input", "x", "--out", "o").inputs == ["x"]  # the older spelling alone still works


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "give at least one INPUT"),
    (["--out", "o", "cluster.actors=2"], "give at least one INPUT"),
    (["-", "--out", "o"], "'-' (standard input): the inputs are read by Ray tasks"),
    (["x", "--out", "o", "--input-format", "conll"], "invalid choice: 'conll'"),
    (["x", "--out", "o", "--device", "cuda:1"], "Ray chooses each actor's GPU; use cuda"),
    (["x", "--out", "o", "--device", "gpu"], "unknown device; use auto, cpu or cuda"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_an_input_in_the_wrong_format_is_refused_before_ray_starts(tmp_path, monkeypatch):
    import cemr.modeldir
    import cluster.bootstrap

    monkeypatch.setattr(cluster.bootstrap, "connect", lambda *a, **k: pytest.fail("Ray started"))
    monkeypatch.setattr(cemr.modeldir, "check_model_dir", lambda d: d)
    note = _write(tmp_path)
    with pytest.raises(CorpusError, match="format jsonl does not fit: it looks like text"):
        job.main(_args(model=str(tmp_path), inputs=[str(note)], input_format="jsonl", out=str(tmp_path / "pred")))
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("device, configured, expected", [
    ("auto", 0, 0.0), ("auto", 1, 1.0), ("cpu", 1, 0.0), ("cpu", 0, 0.0), ("cuda", 0, 1.0), ("cuda", 0.5, 0.5),
])
def test_device_sets_the_gpus_of_the_actors(device, configured, expected, tmp_path, monkeypatch):
    import cemr.modeldir
    import cluster.bootstrap

    class Started(Exception):
        pass

    seen = {}

    def connect(cfg, log):
        seen["gpus"] = cfg.cluster.actor_num_gpus
        raise Started

    monkeypatch.setattr(cluster.bootstrap, "connect", connect)
    monkeypatch.setattr(cemr.modeldir, "check_model_dir", lambda d: d)
    with pytest.raises(Started):
        job.main(_args(model=str(tmp_path), inputs=[str(_write(tmp_path))], out=str(tmp_path / "pred"),
                       device=device, overrides=[f"cluster.actor_num_gpus={configured}"]))
    assert seen["gpus"] == expected
    assert job.device_overrides(device, configured) == (
        [f"cluster.actor_num_gpus={int(expected)}"] if expected != configured else [])
