"""The jobs/ entry points: arguments, config loading, exit codes, and each job end to end on the
tiny demo (pretrain -> train -> predict / evaluate -> a one-threshold sweep on top of it)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import _common
from jobs._common import build_parser, load_job_config, run_job

REPO = Path(__file__).resolve().parents[2]
JOBS = ("bootstrap", "sweep", "train", "pretrain", "predict", "evaluate")
TINY = [
    "data.demo_documents=40", "data.demo_unlabeled=200", "model.char_dim=16", "model.gru_hidden=16",
    "model.attention_heads=2", "model.word2vec.dim=16", "model.word2vec.epochs=1", "model.bilm.enabled=false",
    "model.bert.enabled=false", "model.dictionary.dim=8", "lexicon.folds=2", "train.epochs=1",
    "cluster.num_cpus=2", "cluster.cpus_per_worker=0.5", "cluster.actors=1", "cluster.actor_num_cpus=0.5",
    "selftrain.patience=0",
]


# ----------------------------------------------------------------------------------------------
# Arguments and exit codes (no Ray)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", JOBS)
def test_every_job_has_help(name):
    out = subprocess.run([sys.executable, "-m", f"jobs.{name}", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"usage: jobs.{name}" in out.stdout and "--config" in out.stdout and "KEY=VALUE" in out.stdout
    assert ("--resume" in out.stdout) == (name in ("bootstrap", "sweep", "train"))


@pytest.mark.parametrize("name", JOBS)
def test_every_job_option_is_explained_with_its_default(name):
    import argparse
    import importlib

    parser = importlib.import_module(f"jobs.{name}").parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        what = f"jobs.{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help.strip(), f"{what}: no help text"
        if action.default not in (None, argparse.SUPPRESS, []) and action.nargs != 0:
            assert f"(default: {action.default})" in text, f"{what}: default {action.default!r} not shown"


def test_options_and_overrides_may_be_intermixed():
    p = build_parser("jobs.x", "doc", resume=True)
    args = p.parse_intermixed_args(["train.epochs=3", "--resume", "--config", "c.yaml", "selftrain.threshold=0.5"])
    assert args.resume and args.config == "c.yaml" and args.overrides == ["train.epochs=3", "selftrain.threshold=0.5"]


def test_the_default_config_is_the_demo_with_overrides_applied():
    args = argparse.Namespace(config=None, overrides=["train.epochs=3", "selftrain.threshold=0.55"])
    cfg = load_job_config(args)
    assert cfg.name == "demo" and cfg.train.epochs == 3 and cfg.selftrain.threshold == 0.55
    assert _common.DEFAULT_CONFIG.is_file()


def _config_main(args):
    return {"epochs": load_job_config(args).train.epochs}


def test_run_job_prints_one_json_object_last(capsys):
    assert run_job(_config_main, build_parser("jobs.t", "doc"), ["train.epochs=2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"epochs": 2}


def test_a_bad_override_is_a_usage_error_naming_the_key(capsys):
    assert run_job(_config_main, build_parser("jobs.t", "doc"), ["train.epoch=2"]) == _common.EXIT_USAGE
    err = capsys.readouterr().err
    assert "train.epoch" in err and "unknown key" in err


def test_a_stale_run_dir_or_a_refused_resume_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """The pretrain job on a run directory prepared from another config exits 2 naming the key
    (no Ray task is started: the driver checks the stage markers); so does ``--resume`` with a
    key that may not change."""
    import cluster.bootstrap
    from cemr.config import load_config
    from cemr.pipeline import RunLayout, prepare_data
    from cluster.bootstrap import ResumeConfigError
    from jobs import pretrain

    run_dir = tmp_path / "run"
    prepare_data(load_config(_common.DEFAULT_CONFIG, [*TINY, f"run_dir={run_dir}"]), RunLayout.of(run_dir),
                 lambda _m: None)
    monkeypatch.setattr(cluster.bootstrap, "connect", lambda *a, **k: None)  # no Ray here
    rc = pretrain.cli([*TINY, f"run_dir={run_dir}", "data.demo_seed=99"])
    err = capsys.readouterr().err
    assert rc == _common.EXIT_USAGE and "data.demo_seed: 7 -> 99" in err and str(run_dir / "data") in err

    def refused(_args):
        raise ResumeConfigError("state.json: cannot resume: train.epochs (2 -> 3) changed")

    assert run_job(refused, build_parser("jobs.t", "doc"), []) == _common.EXIT_USAGE
    assert "config error: state.json: cannot resume: train.epochs" in capsys.readouterr().err


def test_a_failure_exits_1_with_the_error(capsys):
    def boom(_args):
        raise RuntimeError("disk full")

    assert run_job(boom, build_parser("jobs.t", "doc"), []) == _common.EXIT_ERROR
    assert "jobs.t: failed: RuntimeError: disk full" in capsys.readouterr().err


def test_sigterm_unwinds_the_job_and_exits_143(capsys):
    unwound = []

    def killed(_args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not interrupt the job")
        finally:
            unwound.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert run_job(killed, build_parser("jobs.t", "doc"), []) == _common.EXIT_TERMINATED
    assert unwound == [True] and "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


# ----------------------------------------------------------------------------------------------
# End to end, in this process, on a local Ray instance
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    pythonpath = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def _run(name, argv, capsys):
    module = importlib.import_module(f"jobs.{name}")
    rc = module.cli([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.err[-4000:]
    return json.loads(out.out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("jobs")
    return {"base": base, "sweep": base / "sweep", "run": base / "sweep" / "base", "uri": f"sqlite:///{base / 'mlflow.db'}"}


def _args(workdir, *extra):
    return [*TINY, f"run_dir={workdir['run']}", f"tracking.tracking_uri={workdir['uri']}",
            "tracking.experiment=cemr-test-jobs", *extra]


@pytest.mark.slow
@pytest.mark.ray
def test_pretrain_then_train_jobs(local_ray, workdir, capsys):
    pre = _run("pretrain", _args(workdir), capsys)
    assert not pre["skipped"] and pre["sentences"]["train"] > 0 and pre["pretrain"]["word2vec.dim"] == 16
    again = _run("pretrain", _args(workdir), capsys)
    assert again["skipped"]
    assert importlib.import_module("jobs.pretrain").cli(_args(workdir, "model.word2vec.window=2")) == 2
    assert "model.word2vec.window" in capsys.readouterr().err  # another pretraining config: refused
    train = _run("train", _args(workdir, "selftrain.max_rounds=3"), capsys)  # train forces max_rounds=0
    assert [r["round"] for r in train["rounds"]] == [0] and train["stop_reason"] == "reached max_rounds=0"
    assert Path(train["best_model_dir"]).is_dir() and train["best_test"]["micro"]


@pytest.mark.slow
@pytest.mark.ray
def test_predict_job_writes_jsonl_and_brat_on_document_offsets(local_ray, workdir, capsys, tmp_path):
    texts = tmp_path / "notes.txt"
    texts.write_text("患者三天前无明显诱因出现头痛，伴恶心。\n查体：腹部压痛，行头颅CT检查。\n", encoding="utf-8")
    out = _run("predict", _args(workdir, "--input", texts, "--out", tmp_path / "pred"), capsys)
    assert out["documents"]["written"] == 2 and out["inputs"][str(texts)]["kept"] == 2
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for s in manifest["shards"]
            for line in (tmp_path / "pred" / s["name"]).read_text(encoding="utf-8").splitlines()]
    assert sorted(r["text"] for r in rows) == sorted(texts.read_text(encoding="utf-8").splitlines())
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"]:e["end"]] == e["mention"] and 0.0 <= e["confidence"] <= 1.0
    brat = _run("predict", _args(workdir, "--input", texts, "--out", tmp_path / "brat", "--out-format", "brat"),
                capsys)
    assert brat["documents"]["written"] == 2 and len(list((tmp_path / "brat").glob("*.ann"))) == 2


@pytest.mark.slow
@pytest.mark.ray
def test_evaluate_job_on_a_split_and_on_a_corpus(local_ray, workdir, capsys, tmp_path):
    from cemr.corpus.writers import write_jsonl
    from cemr.pipeline import RunLayout, load_sentences, sentences_to_documents
    from cemr.selftrain import load_state

    split = _run("evaluate", _args(workdir, "--split", "test", "--out", tmp_path / "eval.json"), capsys)
    state = load_state(workdir["run"])
    assert split["micro"]["f1"] == pytest.approx(state.rounds[0].extra["test"]["micro"]["f1"])  # same as the round
    assert json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))["micro"] == split["micro"]
    docs = sentences_to_documents(load_sentences(RunLayout.of(workdir["run"]), "dev"))
    write_jsonl(docs, tmp_path / "dev.jsonl")
    corpus = _run("evaluate", _args(workdir, "--format", "jsonl", "--data", tmp_path / "dev.jsonl"), capsys)
    assert corpus["documents"] == len(docs) and corpus["entities"] == sum(len(d.spans) for d in docs)
    assert set(corpus["per_type"]) and 0.0 <= corpus["micro"]["f1"] <= 1.0


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_job_nests_one_run_per_threshold(local_ray, workdir, capsys):
    """A one-threshold sweep whose base is the finished gold-only run of the train job."""
    from mlflow.tracking import MlflowClient

    out = _run("sweep", [*TINY, f"run_dir={workdir['sweep']}", f"tracking.tracking_uri={workdir['uri']}",
                         "tracking.experiment=cemr-test-jobs", "sweep.start=0.3", "sweep.stop=0.3",
                         "selftrain.max_rounds=1"], capsys)
    assert out["thresholds"] == [0.3] and out["results"][0]["threshold"] == 0.3
    member = Path(out["results"][0]["run_dir"])
    assert member.name == "threshold_0.30" and (member / "data").is_symlink()
    client = MlflowClient(tracking_uri=workdir["uri"])
    sweep = client.get_run(out["mlflow_run_id"])
    assert sweep.info.status == "FINISHED" and sweep.data.tags["cemr.kind"] == "sweep"
    children = client.search_runs([sweep.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{sweep.info.run_id}'")
    member_run = [r for r in children if r.data.tags.get("cemr.kind") == "sweep_member"]
    assert len(member_run) == 1
    steps = sorted(m.step for m in client.get_metric_history(member_run[0].info.run_id, "dev_f1"))
    assert steps == [0, 1]  # round 0 (shared) was logged to the member's run too
    assert [m.step for m in client.get_metric_history(sweep.info.run_id, "sweep/best_dev_f1")] == [30]
    assert "plots/f1_vs_threshold.png" in [f.path for f in client.list_artifacts(sweep.info.run_id, "plots")]
    assert out["model_uri"].startswith("models:/")
