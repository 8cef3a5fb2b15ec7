"""cluster.bootstrap: pure helpers, the bootstrap run end to end on a tiny demo (with resume), and
the job through ``ray job submit`` on a real head (killed mid-round, resubmitted with --resume)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import fakes
import pytest

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.selftrain import RoundRecord, RunState, load_state, save_state
from cluster.bootstrap import BootstrapError, check_resume_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_configs" / "experiments" / "demo.yaml"
TINY = [*fakes.TINY_RUN, "train.epochs=2", "cluster.actor_num_cpus=0.5", "selftrain.threshold=0.3",
        "selftrain.patience=0"]


# ----------------------------------------------------------------------------------------------
# Pure parts
# ----------------------------------------------------------------------------------------------


def test_resume_allows_only_the_keys_documented_as_safe(tmp_path):
    from cemr.config import ConfigError, flatten, load_config
    from cluster.bootstrap import ResumeConfigError

    state_path = tmp_path / "state.json"
    old = flatten(load_config(DEMO, [*TINY, "selftrain.max_rounds=0", "run_dir=a"]))
    safe = {"selftrain.max_rounds": 2, "selftrain.patience": 3, "run_dir": "b", "tracking.experiment": "x",
            "cluster.actors": 4, "train.device": "cpu", "sweep.step": 0.05}
    changed = check_resume_config(old, {**old, **safe}, state_path)
    assert changed == {k: (old[k], v) for k, v in sorted(safe.items()) if k != "run_dir"}
    for key, value in (("train.epochs", 3), ("train.lr", 0.1), ("model.char_dim", 32), ("data.demo_seed", 8),
                       ("lexicon.folds", 3), ("cluster.num_workers", 2)):
        with pytest.raises(ResumeConfigError, match=rf"state.json: cannot resume: {re.escape(key)} "
                                                    rf"\({old[key]!r} -> {value!r}\) changed.*new run_dir"):
            check_resume_config(old, {**old, key: value}, state_path)
    # pseudo-labeling keys: free until a round >= 1 has started, then fixed
    assert check_resume_config(old, {**old, "selftrain.threshold": 0.5}, state_path, selftrain_started=False) == {
        "selftrain.threshold": (0.3, 0.5)}
    with pytest.raises(ResumeConfigError, match=r"selftrain.threshold \(0.3 -> 0.5\)"):
        check_resume_config(old, {**old, "selftrain.threshold": 0.5}, state_path, selftrain_started=True)
    assert issubclass(ResumeConfigError, ConfigError) and issubclass(ResumeConfigError, BootstrapError)
    # a key added to cemr after the run started (absent from its state) is no change at its default,
    # and a change when set otherwise
    before = {k: v for k, v in old.items() if not k.startswith("model.bigram.")}
    assert check_resume_config(before, old, state_path) == {}
    with pytest.raises(ResumeConfigError, match=r"model.bigram.enabled \(None -> True\)"):
        check_resume_config(before, {**old, "model.bigram.enabled": True}, state_path)


def _stopped_run(tmp_path, cfg):
    """A run directory whose round 0 is done and whose state says it may go on (not finished)."""
    from cemr.config import flatten

    model = Path(cfg.run_dir) / "rounds" / "round_000" / "model"
    model.mkdir(parents=True)
    state = RunState(rounds=[RoundRecord(round=0, dev_f1=0.3, model_dir=str(model))], config=flatten(cfg))
    save_state(cfg.run_dir, state)
    return state


def test_a_resume_with_a_changed_training_key_is_refused_before_ray_starts(tmp_path, monkeypatch):
    from cemr.config import load_config
    from cluster import bootstrap

    common = [*TINY, f"run_dir={tmp_path / 'run'}", "selftrain.max_rounds=0"]
    _stopped_run(tmp_path, load_config(DEMO, common))
    monkeypatch.setattr(bootstrap, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(bootstrap.ResumeConfigError, match=r"train.epochs \(2 -> 3\)"):
        bootstrap.run_bootstrap(load_config(DEMO, [*common, "selftrain.max_rounds=1", "train.epochs=3"]),
                                resume=True, log=lambda _m: None)


def test_a_resume_with_a_safe_change_is_recorded_on_the_mlflow_run(tmp_path, monkeypatch):
    """The run's params stay its first start's (MLflow cannot change them); the resume says what changed."""
    from mlflow.tracking import MlflowClient

    from cemr.config import flatten, load_config
    from cemr.tracking import Tracker
    from cluster import bootstrap

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [*TINY, f"run_dir={tmp_path / 'run'}", f"tracking.tracking_uri={uri}", "tracking.experiment=resume"]
    first = load_config(DEMO, [*common, "selftrain.max_rounds=0"])
    state = _stopped_run(tmp_path, first)
    tracker = Tracker.from_config(first.tracking, tmp_path / "run")
    run_id = tracker.start_parent(params=flatten(first))
    tracker.end()
    state.paths.update({bootstrap.MLFLOW_RUN_KEY: bootstrap.RUNS_PREFIX + run_id,
                        bootstrap.MLFLOW_URI_KEY: tracker.uri})
    save_state(tmp_path / "run", state)

    class Stop(Exception):
        pass

    def stop(*_a, **_k):
        raise Stop

    monkeypatch.setattr(bootstrap, "connect", lambda *a, **k: None)
    monkeypatch.setattr(bootstrap, "run_stages", stop)  # what happens after the record is not tested here
    with pytest.raises(Stop):
        bootstrap.run_bootstrap(load_config(DEMO, [*common, "selftrain.max_rounds=1"]), resume=True,
                                log=lambda _m: None)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["selftrain.max_rounds"] == "0"  # as first logged
    assert run.data.params["resume_1/selftrain.max_rounds"] == "1"
    assert run.data.tags["cemr.resumes"] == "1" and run.data.tags["cemr.resumed_from_round"] == "1"
    assert json.loads(run.data.tags["cemr.resume_changes"]) == {"selftrain.max_rounds": [0, 1]}
    record = json.loads((Path(client.download_artifacts(run_id, "resume/resume_1.json", str(tmp_path)))
                         ).read_text(encoding="utf-8"))
    assert record["next_round"] == 1 and record["config"]["selftrain.max_rounds"] == 1
    assert load_state(tmp_path / "run").config["selftrain.max_rounds"] == 1


def _artifacts(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def test_round_samples_reach_mlflow_only_with_log_samples(tmp_path, monkeypatch):
    """Raw text goes to MLflow only with tracking.log_samples: then the first sentences of the
    round's pseudo-label set, as samples/round_<r>.json and as the HTML view
    samples/round_<r>_pseudo.html, and the round's pages (its dev documents); without it a round
    logs numbers and its report only."""
    from mlflow.tracking import MlflowClient

    from cemr.corpus.shards import ShardWriter
    from cemr.tracking import Tracker
    from cluster import bootstrap
    from cluster.pseudolabel import PREDICTIONS_FIELD

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kept = tmp_path / "kept"
    with ShardWriter(kept, extra_fields=[PREDICTIONS_FIELD]) as writer:
        for i in range(30):
            writer.write(Sentence("u1", i, 0, f"患者头痛{i}天", [Span(2, 4, "症状和体征")]), "pseudo:r1",
                         predictions=[{"start": 2, "end": 4, "type": "症状和体征", "confidence": 0.9}])
    rec = RoundRecord(round=1, dev_f1=0.5, threshold=0.7, pseudo_dir=str(kept))
    dev_page = {"samples/round_001_dev.html": "<html><body>既往高血压</body></html>"}
    runs = {}
    for log_samples in (False, True):
        tracker = Tracker(experiment="samples", store_dir=tmp_path, log_samples=log_samples)
        runs[log_samples] = tracker.start_parent()
        bootstrap._log_round(tracker, rec, {"round": rec.to_dict()}, dev_page)
        bootstrap._log_round(tracker, RoundRecord(round=0, dev_f1=0.4), {})  # no pseudo-labels: no samples
        tracker.end()
    client = MlflowClient(tracking_uri=tracker.uri)
    for log_samples, run_id in runs.items():
        files = {f.path for d in ("rounds", "samples") for f in client.list_artifacts(run_id, d)}
        assert files == {"rounds/round_000.json", "rounds/round_001.json",
                         *(["samples/round_001.json", "samples/round_001_pseudo.html",
                            "samples/round_001_dev.html"] if log_samples else [])}
    local = Path(client.download_artifacts(runs[True], "samples/round_001.json", str(tmp_path / "dl")))
    samples = json.loads(local.read_text(encoding="utf-8"))["samples"]
    assert len(samples) == 20 and samples[0]["text"] == "患者头痛0天"
    assert samples[0]["spans"] == [{"start": 2, "end": 4, "type": "症状和体征"}]
    page = Path(client.download_artifacts(runs[True], "samples/round_001_pseudo.html", str(tmp_path / "dl")))
    html = page.read_text(encoding="utf-8")
    assert html.count('<section class="doc"') == 20 and ">头痛</mark>" in html and 'data-conf="0.900"' in html


def _round(r, dev_f1, test_f1, **kw):
    """A completed round as the runner records it: dev/test reports, calibration, pseudo-labels."""
    from cemr.plots import reliability_bins

    rel = reliability_bins([0.9, 0.8, 0.3, 0.95], [True, True, False, r > 0]).to_dict()
    extra = {"test": {"micro": {"f1": test_f1}}, "calibration": {"unit": "entity", "mode": "entity",
                                                                  "method": "entity_min_marginal", **rel}}
    if r:
        extra["pseudo_gold_per_type"] = {
            "症状和体征": {"precision": 0.9, "recall": 0.5, "f1": 0.64, "tp": 9, "fp": 1, "fn": 9},
            "疾病和诊断": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "tp": 2, "fp": 2, "fn": 2}}
        extra["pseudo_metrics"] = {f"pseudo_gold/{t}/{k}": prf[k] for t, prf in extra["pseudo_gold_per_type"].items()
                                   for k in ("precision", "recall", "f1")}  # as PseudoLabelResult.metrics gives them
        kw.update(pseudo_entities={"症状和体征": 10 * r, "疾病和诊断": 4}, pseudo_prf={"precision": 0.85},
                  threshold=0.7)
    return RoundRecord(round=r, dev_f1=dev_f1, extra=extra, **kw)


def test_each_round_logs_its_plots_to_the_mlflow_run(tmp_path, monkeypatch):
    """After every round the run has F1 per round (dev and test), the pseudo-labels per type with
    their precision, that round's reliability plot and dev_ece, each PNG with its numbers beside it."""
    from mlflow.tracking import MlflowClient

    from cemr.tracking import Tracker
    from cluster import bootstrap

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(experiment="plots", store_dir=tmp_path)
    run_id = tracker.start_parent()
    rounds = [_round(0, 0.5, 0.45), _round(1, 0.6, 0.58), _round(2, 0.55, 0.6)]
    for k, rec in enumerate(rounds):
        bootstrap._log_round(tracker, rec, {"round": rec.to_dict()})
        bootstrap._log_plots(tracker, rounds[:k + 1])
        if k == 0:  # gold only so far: no pseudo-label plot yet
            assert "plots/pseudo_labels.png" not in _artifacts(MlflowClient(tracking_uri=tracker.uri), run_id)
    tracker.end()
    client = MlflowClient(tracking_uri=tracker.uri)
    files = set(_artifacts(client, run_id))
    assert {"plots/f1_vs_round.png", "plots/f1_vs_round.json", "plots/pseudo_labels.png", "plots/pseudo_labels.json",
            "plots/reliability/round_000.png", "plots/reliability/round_001.png", "plots/reliability/round_002.png",
            "plots/reliability/round_002.json"} <= files

    def data(path):
        local = Path(client.download_artifacts(run_id, path, str(tmp_path / "dl")))
        return json.loads(local.read_text(encoding="utf-8"))

    assert data("plots/f1_vs_round.json") == {"round": [0, 1, 2], "dev_f1": [0.5, 0.6, 0.55],
                                              "test_f1": [0.45, 0.58, 0.6], "best_round": 1}  # the last round's
    pseudo = data("plots/pseudo_labels.json")
    assert pseudo["round"] == [1, 2] and pseudo["kept"] == {"疾病和诊断": [4, 4], "症状和体征": [10, 20]}
    assert pseudo["precision"] == {"疾病和诊断": [0.5, 0.5], "症状和体征": [0.9, 0.9]}
    assert pseudo["micro_precision"] == [0.85, 0.85] and set(pseudo["labels"]) == {"疾病和诊断", "症状和体征"}
    assert data("plots/reliability/round_002.json")["counts"][9] == 2
    ece = {m.step: m.value for m in client.get_metric_history(run_id, "dev_ece")}
    assert sorted(ece) == [0, 1, 2] and ece[0] == pytest.approx(rounds[0].extra["calibration"]["ece"])
    assert [m.step for m in client.get_metric_history(run_id, "pseudo_gold/症状和体征/precision")] == [1, 2]
    png = Path(client.download_artifacts(run_id, "plots/f1_vs_round.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rounds_evaluation_measures_dev_calibration_and_tags_dev_pages(tmp_path, monkeypatch):
    """The runner's evaluation: the scores of cemr.pipeline.evaluate_splits, the calibration of the
    model's dev confidences (per entity in entity selection) and, with tracking.log_samples, the
    HTML view of the first dev documents tagged by the model."""
    import cemr.pipeline
    from cemr.config import load_config
    from cemr.corpus.document import Document
    from cemr.pipeline import RunLayout
    from cemr.predictor import Predictor
    from cluster import bootstrap

    docs = [Document(f"d{i}", "患者头痛。", [Span(2, 4, "症状和体征")]) for i in range(25)]

    class Ent:
        def __init__(self, span, confidence):
            self.span, self.confidence = span, confidence

    class Pred:
        def __init__(self, entities):
            self.entities, self.confidence = entities, 0.5

    class Fake:
        labels = type("Labels", (), {"types": ["症状和体征"]})()

        def predict_document_sentences(self, docs, max_len=None, batch_size=None):
            return [(Sentence(d.id, 0, 0, d.text), Pred([Ent(Span(2, 4, "症状和体征"), 0.95),
                                                          Ent(Span(0, 2, "身体部位"), 0.35)])) for d in docs]

        def predict_documents(self, docs, max_len=None, batch_size=None):
            return {d.id: [Ent(Span(2, 4, "症状和体征"), 0.95)] for d in docs}

    monkeypatch.setattr(Predictor, "load", lambda *a, **k: Fake())
    monkeypatch.setattr(cemr.pipeline, "evaluate_splits", lambda *a, **k: {"dev": {"micro": {"f1": 0.5}}})
    monkeypatch.setattr(cemr.pipeline, "load_documents", lambda layout, split: docs if split == "dev" else [])
    for log_samples in (False, True):
        cfg = load_config(DEMO, [*TINY, f"run_dir={tmp_path}", "selftrain.selection=entity",
                                 f"tracking.log_samples={str(log_samples).lower()}"])
        runner = object.__new__(bootstrap._RoundRunner)
        runner.cfg, runner.layout, runner.device = cfg, RunLayout.of(tmp_path), "cpu"
        evals, pages = runner.evaluate(tmp_path / "model", 3)
        cal = evals["calibration"]
        assert evals["dev"] == {"micro": {"f1": 0.5}} and (cal["unit"], cal["n"]) == ("entity", 50)
        assert cal["counts"][9] == 25 and cal["accuracy"][9] == 1.0 and cal["accuracy"][3] == 0.0
        assert cal["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.35)
        assert list(pages) == (["samples/round_003_dev.html"] if log_samples else [])
    page = pages["samples/round_003_dev.html"]
    assert page.count('<section class="doc"') == bootstrap.SAMPLE_DOCUMENTS and ">头痛</mark>" in page
    assert "type_thresholds" not in evals  # selftrain.target_precision unset: nothing fitted

    # selftrain.target_precision: per-type thresholds fitted on the same dev predictions
    cfg = load_config(DEMO, [*TINY, f"run_dir={tmp_path}", "selftrain.selection=partial",
                             "selftrain.target_precision=0.9"])
    runner.cfg, runner.log = cfg, (lines := []).append
    evals, _ = runner.evaluate(tmp_path / "model", 4)
    fitted = {f["type"]: f for f in evals["type_thresholds"]}
    assert fitted["症状和体征"]["threshold"] == 0.95 and fitted["症状和体征"]["precision"] == 1.0
    assert fitted["身体部位"]["threshold"] is None  # 25 predictions, all wrong: keeps selftrain.threshold
    assert any("per-type thresholds for precision 0.9" in line for line in lines)

    # a teacher evaluated without target_precision (round 0 shared from another run, a resume that
    # sets it) has its thresholds fitted when a round needs them, the same way, and says so
    teacher = RoundRecord(round=0, dev_f1=0.5, model_dir=str(tmp_path / "model"), extra={"type_thresholds": None})
    assert bootstrap.teacher_thresholds(teacher, cfg.selftrain) is None
    late = runner.fit_thresholds(teacher)
    assert late == evals["type_thresholds"] and bootstrap.thresholds_of(late) == {"症状和体征": 0.95}
    assert any("round 0 was evaluated without selftrain.target_precision" in line for line in lines)


def test_a_finished_run_with_nothing_left_returns_without_ray(tmp_path, monkeypatch):
    from cemr.config import load_config
    from cluster import bootstrap

    run_dir = tmp_path / "run"
    model = run_dir / "rounds" / "round_000" / "model"
    model.mkdir(parents=True)
    cfg = load_config(DEMO, [*TINY, f"run_dir={run_dir}", "selftrain.max_rounds=0"])
    from cemr.config import flatten

    state = RunState(rounds=[RoundRecord(round=0, dev_f1=0.3, model_dir=str(model))], finished=True,
                     stop_reason="reached max_rounds=0", config=flatten(cfg))
    save_state(run_dir, state)
    monkeypatch.setattr(bootstrap, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(BootstrapError, match="already holds a run; pass --resume"):
        bootstrap.run_bootstrap(cfg, resume=False, log=lambda _m: None)
    summary = bootstrap.run_bootstrap(cfg, resume=True, log=lambda _m: None)
    assert summary.rounds_run == [] and summary.best_round == 0 and summary.best_dev_f1 == 0.3


# ----------------------------------------------------------------------------------------------
# End to end on the tiny demo: max_rounds=0, then --resume with max_rounds=1
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_phase_run(ray_local, tmp_path_factory):
    from cemr.config import load_config
    from cluster.bootstrap import run_bootstrap

    base = tmp_path_factory.mktemp("bootstrap")
    run_dir = base / "run"
    common = [*TINY, f"run_dir={run_dir}", f"tracking.tracking_uri=sqlite:///{base / 'mlflow.db'}",
              "tracking.experiment=cemr-test-bootstrap", "selftrain.warm_start=true"]
    logs: list[list[str]] = [[], []]
    first = run_bootstrap(load_config(DEMO, [*common, "selftrain.max_rounds=0"]), log=logs[0].append)
    model0 = run_dir / "rounds" / "round_000" / "model" / "weights.safetensors"
    stamp0 = model0.stat().st_mtime_ns
    state0 = load_state(run_dir)
    second = run_bootstrap(load_config(DEMO, [*common, "selftrain.max_rounds=1"]), resume=True, log=logs[1].append)
    return {"run_dir": run_dir, "first": first, "second": second, "stamp0": stamp0, "model0": model0,
            "state0": state0, "logs": logs, "uri": f"sqlite:///{base / 'mlflow.db'}"}


@pytest.mark.slow
@pytest.mark.ray
def test_bootstrap_state_has_both_rounds(two_phase_run):
    run = two_phase_run
    state = load_state(run["run_dir"])
    assert [r.round for r in state.rounds] == [0, 1] and state.finished
    assert state.stop_reason == "reached max_rounds=1"
    r1 = state.rounds[1]
    assert r1.threshold == 0.3 and r1.pseudo_dir and Path(r1.pseudo_dir).is_dir()
    assert sum(r1.pseudo_counts.values()) == r1.extra["pseudo"]["input_rows"] > 0
    assert r1.train_sentences == state.rounds[0].train_sentences + r1.pseudo_sentences
    # selftrain.warm_start: the worker started round 1 from round 0's model (it reports what it loaded)
    assert state.rounds[0].extra["train"]["init_model"] is None
    assert r1.extra["train"]["init_model"] == str(Path(state.rounds[0].model_dir).resolve())
    for r in state.rounds:
        assert Path(r.model_dir).is_dir() and r.extra["dev"]["per_type"] and r.extra["test"]["micro"]
        assert (run["run_dir"] / "rounds" / f"round_{r.round:03d}" / "report.json").is_file()
    assert json.loads((run["run_dir"] / "summary.json").read_text(encoding="utf-8"))["best_round"] in (0, 1)


@pytest.mark.slow
@pytest.mark.ray
def test_resume_does_not_redo_round_0(two_phase_run):
    run = two_phase_run
    assert run["first"].rounds_run == [0] and run["second"].rounds_run == [1]
    assert run["second"].resumed_from_round == 1
    assert run["model0"].stat().st_mtime_ns == run["stamp0"]  # round 0's model was not rewritten
    assert load_state(run["run_dir"]).rounds[0] == run["state0"].rounds[0]
    assert not any("round 0: start" in line for line in run["logs"][1])
    assert any("stages:" in line and "already written" in line for line in run["logs"][1])


@pytest.mark.slow
@pytest.mark.ray
def test_mlflow_parent_run_has_params_round_metrics_and_artifacts(two_phase_run):
    from mlflow.tracking import MlflowClient

    run = two_phase_run
    assert run["first"].mlflow_run_id == run["second"].mlflow_run_id  # the parent run was reopened
    client = MlflowClient(tracking_uri=run["uri"])
    mrun = client.get_run(run["second"].mlflow_run_id)
    assert mrun.info.status == "FINISHED"
    assert mrun.data.params["train.epochs"] == "2" and mrun.data.params["selftrain.threshold"] == "0.3"
    assert mrun.data.params["selftrain.max_rounds"] == "0"  # the first start's; the resume records the change
    assert mrun.data.params["resume_1/selftrain.max_rounds"] == "1" and mrun.data.tags["cemr.resumes"] == "1"
    assert mrun.data.tags["cemr.kind"] == "bootstrap"
    steps = {m.step: m.value for m in client.get_metric_history(mrun.info.run_id, "dev_f1")}
    assert sorted(steps) == [0, 1]
    state = load_state(run["run_dir"])
    assert steps[1] == pytest.approx(state.rounds[1].dev_f1)
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "threshold")] == [1]
    assert client.get_metric_history(mrun.info.run_id, "pseudo/kept")
    assert client.get_metric_history(mrun.info.run_id, "pseudo/input_rows")
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "test_f1")] == [0, 1]
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "test_recall")] == [0, 1]
    best = state.best
    assert mrun.data.metrics["best_dev_f1"] == pytest.approx(best.dev_f1)
    assert mrun.data.metrics["best_test_f1"] == pytest.approx(best.extra["test"]["micro"]["f1"])
    assert run["second"].best_test_f1 == pytest.approx(best.extra["test"]["micro"]["f1"])

    files = _artifacts(client, mrun.info.run_id)
    assert {"rounds/round_000.json", "rounds/round_001.json", "plots/f1_vs_round.png", "summary.json",
            "plots/pseudo_labels.png", "plots/reliability/round_000.png", "plots/reliability/round_001.png",
            "config/effective.json", "resume/resume_1.json"} <= set(files)
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "dev_ece")] == [0, 1]
    assert "resume 1 at round 1: `selftrain.max_rounds` 0 -> 1" in mrun.data.tags["mlflow.note.content"]
    f1 = json.loads(Path(client.download_artifacts(mrun.info.run_id, "plots/f1_vs_round.json",
                                                   str(run["run_dir"] / "dl"))).read_text(encoding="utf-8"))
    assert f1["round"] == [0, 1] and f1["test_f1"] == [r.extra["test"]["micro"]["f1"] for r in state.rounds]
    assert run["second"].model_uri and run["second"].model_uri.startswith("models:/")
    versions = client.search_model_versions("name='cemr-tagger'")
    assert any(v.run_id == mrun.info.run_id for v in versions)


# ----------------------------------------------------------------------------------------------
# ray job submit on a real head: killed mid-round 1, resubmitted with --resume
# ----------------------------------------------------------------------------------------------


def _ray(head, *args, timeout=120):
    ray_exe = str(Path(sys.executable).parent / "ray")
    return subprocess.run([ray_exe, *args], env=head.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


FINAL_WORDS = {"was stopped": "STOPPED", "succeeded": "SUCCEEDED", "failed": "FAILED"}


def _job_status(head, job_id, tries=5):
    """The job's status (``ray job status`` prints ``Status for job 'x': RUNNING`` while it runs and
    ``Job 'x' succeeded / failed / was stopped`` at the end); a dashboard that does not answer (a
    busy machine) is asked again."""
    for _ in range(tries):
        out = _ray(head, "job", "status", "--address", head.dashboard_url, job_id)
        text = out.stdout + out.stderr
        match = re.search(r"Status for job '[^']+': ([A-Z]+)", text)
        if match:
            return match.group(1)
        for words, status in FINAL_WORDS.items():
            if f"Job '{job_id}' {words}" in text:
                return status
        time.sleep(5)
    return "UNKNOWN:" + text[-600:]


def _wait(head, job_id, until, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _job_status(head, job_id)
        if until(status):
            return status
        time.sleep(3)
    return _job_status(head, job_id)


def _submit(head, job_id, args):
    out = _ray(head, "job", "submit", "--address", head.dashboard_url, "--submission-id", job_id, "--no-wait",
               "--working-dir", str(REPO), "--", "python", "-m", "jobs.bootstrap", *args)
    assert out.returncode == 0, out.stdout + out.stderr


def _logs(head, job_id):
    out = _ray(head, "job", "logs", "--address", head.dashboard_url, job_id)
    return out.stdout[-6000:] + out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.ray
def test_job_submit_killed_mid_round_then_resumed(ray_head, tmp_path):
    """Round 0 (4 epochs) is stopped with ``ray job stop`` once Ray Train has a checkpoint; the
    resubmitted ``--resume`` job continues that round from the checkpoint and succeeds, in the same
    MLflow run."""
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the head has one CPU: half of it for the stage task and the Ray Train worker
    args = [*TINY, f"run_dir={run_dir}", f"tracking.tracking_uri={uri}", "tracking.experiment=cemr-test-job",
            "tracking.register_model=null", "selftrain.max_rounds=0", "train.epochs=4", "train.patience=0",
            "cluster.num_cpus=null", "cluster.cpus_per_worker=0.5"]
    _submit(ray_head, "cemr_boot_a", args)
    ray_round = run_dir / "ray_train" / "round_000"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:  # wait for the first epoch's checkpoint of round 0
        if list(ray_round.glob("checkpoint_*")):
            break
        status = _job_status(ray_head, "cemr_boot_a")
        assert status in ("PENDING", "RUNNING"), f"{status}\n{_logs(ray_head, 'cemr_boot_a')}"
        time.sleep(1)
    assert list(ray_round.glob("checkpoint_*")), _logs(ray_head, "cemr_boot_a")
    out = _ray(ray_head, "job", "stop", "--address", ray_head.dashboard_url, "cemr_boot_a")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _wait(ray_head, "cemr_boot_a", lambda s: s in ("STOPPED", "FAILED", "SUCCEEDED"), 120) == "STOPPED"
    killed = load_state(run_dir)
    assert killed.rounds == [] and not killed.finished  # stopped inside round 0

    _submit(ray_head, "cemr_boot_b", [*args, "--resume"])
    status = _wait(ray_head, "cemr_boot_b", lambda s: s in ("STOPPED", "FAILED", "SUCCEEDED"), 900)
    logs = _logs(ray_head, "cemr_boot_b")
    assert status == "SUCCEEDED", logs
    final = load_state(run_dir)
    assert [r.round for r in final.rounds] == [0] and final.finished
    train = final.rounds[0].extra["train"]
    assert train["resumed_from_epoch"] >= 1, logs  # continued from the killed job's checkpoint
    assert [h["epoch"] for h in json.loads((run_dir / "rounds" / "round_000" / "report.json").read_text(
        encoding="utf-8"))["history"]] == [1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds_run"] == [0]

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("cemr-test-job").experiment_id])
    assert len(runs) == 1  # the resubmitted job reopened the killed job's run
    mrun = runs[0]
    assert mrun.info.status == "FINISHED" and mrun.info.run_id == summary["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "dev_f1")] == [0]
    assert mrun.data.tags["cemr.stop_reason"] == "reached max_rounds=0"


def test_failure_tags_carry_the_error_and_its_counts():
    from cluster.bootstrap import failure_tags
    from cluster.pseudolabel import PseudoLabelFailed

    exc = PseudoLabelFailed("40 of 200 rows failed", failed=40, total=200, max_fraction=0.01,
                            failures={"ValueError": 40}, first_errors=[{"doc_id": "d1", "error": "boom"}],
                            all_dir="/tmp/x")
    tags = failure_tags(exc)
    assert tags["cemr.error"] == "PseudoLabelFailed: 40 of 200 rows failed"
    assert json.loads(tags["cemr.error.failures"]) == {"ValueError": 40}
    assert json.loads(tags["cemr.error.first_errors"])[0]["doc_id"] == "d1"
    assert set(failure_tags(RuntimeError("x"))) == {"cemr.error"}


def test_the_stages_task_logs_to_stderr_only(tmp_path, capsys):
    """The prepare + pretrain task runs in a Ray worker whose stdout reaches the job's stdout."""
    from cemr.config import load_config
    from cluster.bootstrap import _stages

    cfg = load_config(None, ["data.demo_documents=30", "data.demo_unlabeled=40", "data.max_sentence_len=64",
                             "model.word2vec.dim=8", "model.word2vec.epochs=1", "model.bilm.enabled=false",
                             "model.bert.enabled=false"])
    _stages(cfg, str(tmp_path / "run"))
    out = capsys.readouterr()
    assert out.out == "" and "word2vec" in out.err
