"""Tracking round trips against a real sqlite MLflow store in tmp_path."""
import json
import os
from pathlib import Path

import pytest

from cemr.config import TrackingConfig
from cemr.corpus.document import Span
from cemr.plots import f1_per_round_figure, f1_per_threshold_figure
from cemr.selftrain import RoundRecord
from cemr.tracking import (
    EFFECTIVE_CONFIG,
    NOTE_TAG,
    SERVING_DISTRIBUTIONS,
    Tracker,
    TrackingError,
    changed_params,
    fluent_tracking_uri,
    resolve_tracking_uri,
    serving_requirements,
)


class FakePrediction:
    def __init__(self, span, confidence):
        self.span, self.confidence = span, confidence


class FakePredictor:
    """Marks every occurrence of the keyword stored in the model dir (proves the dir travelled)."""

    def __init__(self, keyword, device):
        self.keyword, self.device = keyword, device

    @classmethod
    def load(cls, model_dir, device):
        return cls(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["keyword"], device)

    def predict_sentences(self, texts, batch_size):
        out = []
        for text in texts:
            i = text.find(self.keyword)
            out.append([] if i < 0 else [FakePrediction(Span(i, i + len(self.keyword), "疾病和诊断"), 0.9)])
        return out

    def predict_documents(self, docs, batch_size=None):
        preds = self.predict_sentences([d.text for d in docs], batch_size)
        return {d.id: p for d, p in zip(docs, preds)}


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its tables costs seconds); tests use their own
    experiments."""
    return tmp_path_factory.mktemp("mlflow")


def _client(tracker):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracker.uri)


def test_uri_precedence(tmp_path, monkeypatch):
    store = tmp_path
    assert resolve_tracking_uri(None, store) == f"sqlite:///{store.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////x/y.db", store) == "sqlite:////x/y.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri("sqlite:////x/y.db", store) == "http://127.0.0.1:5000"
    cfg = TrackingConfig(experiment="e", log_samples=False)
    t = Tracker.from_config(cfg, store / "runs" / "demo")
    assert t.uri == "http://127.0.0.1:5000" and t.run_name == "demo"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert Tracker.from_config(cfg, store / "runs" / "demo").uri == f"sqlite:///{store.resolve()}/runs/mlflow.db"


def test_disabled_tracker_does_nothing(tmp_path):
    store = tmp_path
    t = Tracker(experiment="off", enabled=False, store_dir=store)
    assert t.start_parent({"a": 1}) is None
    t.log_metrics({"f1": 0.5}, step=1)
    assert t.log_text_samples([{"text": "患者发热"}], "samples.json") is False
    assert t.log_text_page("<p>患者发热</p>", "samples.html") is False
    t.log_dict({"a": 1}, "a.json")
    t.log_plot(f1_per_round_figure([0], [0.5]), "plots/f1_vs_round.png", {"dev_f1": [0.5]})
    assert t.record_resume({"a": (1, 2)}, 1, {"a": 2}) is None
    assert t.log_model_dir(store, "m") is None
    t.end()
    assert list(store.iterdir()) == []


def test_calls_before_start_are_refused(store):
    t = Tracker(experiment="early", store_dir=store)
    with pytest.raises(TrackingError, match="start_parent"):
        t.log_metrics({"f1": 0.5})


def test_round_trip_params_metrics_artifacts(store):
    t = Tracker(experiment="cemr-test", run_name="demo", store_dir=store)
    params = {"selftrain.threshold": 0.7, "data.types": ["A", "B"], "model.bert.checkpoint": None}
    parent = t.start_parent(params)
    history = []
    for rnd, f1 in enumerate([0.61, 0.66]):
        t.log_metrics({"dev_f1": f1, "pseudo/kept": 10 * rnd}, step=rnd)  # one run, step = round
        history.append(RoundRecord(rnd, f1))
    t.log_dict({"rounds": len(history)}, "summary.json")
    report = store / "report.txt"
    report.write_text("numbers only\n", encoding="utf-8")
    t.log_artifact(report, "reports")
    t.log_plot(f1_per_round_figure([0], [0.61]), "plots/f1_vs_round.png", {"dev_f1": [0.61]})
    t.log_plot(f1_per_round_figure([0, 1], [0.61, 0.66]), "plots/f1_vs_round.png", {"dev_f1": [0.61, 0.66]})
    t.log_plot(f1_per_threshold_figure([0.5, 0.6, 0.7], [0.6, 0.65, 0.64]), "plots/f1_vs_threshold.png")
    with pytest.raises(TrackingError, match="metric 'bad'"):
        t.log_metrics({"bad": "high"})
    with pytest.raises(TrackingError, match="does not exist"):
        t.log_artifact(store / "missing.txt")
    t.end()

    client = _client(t)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.params["selftrain.threshold"] == "0.7"
    assert run.data.params["data.types"] == '["A", "B"]'
    assert run.data.params["model.bert.checkpoint"] == "None"
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "dev_f1")] == [(0, 0.61), (1, 0.66)]
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "pseudo/kept")] == [(0, 0.0), (1, 10.0)]

    exp = client.get_experiment_by_name("cemr-test")
    assert exp.artifact_location == (store / "mlartifacts" / "cemr-test").resolve().as_uri()
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [parent]  # no run per round

    top = {a.path for a in client.list_artifacts(parent)}
    assert {"summary.json", "reports", "plots", "config"} <= top
    assert {a.path for a in client.list_artifacts(parent, "plots")} == {
        "plots/f1_vs_round.png", "plots/f1_vs_round.json", "plots/f1_vs_threshold.png"}
    local = Path(client.download_artifacts(parent, "summary.json", str(store / "dl")))
    assert json.loads(local.read_text(encoding="utf-8")) == {"rounds": 2}
    data = Path(client.download_artifacts(parent, "plots/f1_vs_round.json", str(store / "dl")))
    assert json.loads(data.read_text(encoding="utf-8")) == {"dev_f1": [0.61, 0.66]}  # logged again: replaced
    effective = Path(client.download_artifacts(parent, EFFECTIVE_CONFIG, str(store / "dl")))
    assert json.loads(effective.read_text(encoding="utf-8")) == {
        "since_round": 0, "resume": 0, "config": {"selftrain.threshold": 0.7, "data.types": ["A", "B"],
                                                  "model.bert.checkpoint": None}}
    png = Path(client.download_artifacts(parent, "plots/f1_vs_round.png", str(store / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_block_that_raises_ends_the_run_failed(store):
    t = Tracker(experiment="fail", store_dir=store)
    run_id = t.start_parent()
    with pytest.raises(RuntimeError):
        with t:
            raise RuntimeError("boom")
    assert _client(t).get_run(run_id).info.status == "FAILED" and t.parent_id is None
    done = t.start_parent()
    with t:
        pass
    assert _client(t).get_run(done).info.status == "FINISHED" and t.parent_id is None


def test_text_samples_only_when_asked(store):
    samples = [{"text": "患者发热三天", "spans": []}]
    page = "<html><body>患者发热三天</body></html>"
    quiet = Tracker(experiment="samples", store_dir=store)
    quiet.start_parent()
    assert quiet.log_text_samples(samples, "samples.json") is False
    assert quiet.log_text_page(page, "samples.html") is False
    assert [a.path for a in _client(quiet).list_artifacts(quiet.parent_id)] == []
    loud = Tracker(experiment="samples", store_dir=store, log_samples=True)
    loud.start_parent()
    assert loud.log_text_samples(samples, "samples.json") is True
    assert loud.log_text_page(page, "samples.html") is True
    assert [a.path for a in _client(loud).list_artifacts(loud.parent_id)] == ["samples.html", "samples.json"]
    local = Path(_client(loud).download_artifacts(loud.parent_id, "samples.html", str(store / "dl-page")))
    assert local.read_text(encoding="utf-8") == page


def test_each_resume_says_what_changed_and_what_is_in_effect(store):
    """Params stay the first start's; the description lists every resume, the resume_<k>/ params
    and config/effective.json hold the values in effect."""
    t = Tracker(experiment="resumes", store_dir=store)
    run_id = t.start_parent({"selftrain.max_rounds": 0, "cluster.actors": 1})
    t.end()
    again = Tracker(experiment="resumes", store_dir=store)
    again.resume_parent(run_id)
    assert again.record_resume({"selftrain.max_rounds": (0, 2)}, 1,
                               {"selftrain.max_rounds": 2, "cluster.actors": 1}) == 1
    assert again.record_resume({"cluster.actors": (1, 4)}, 3, {"selftrain.max_rounds": 2, "cluster.actors": 4}) == 2
    assert again.record_resume({}, None, {"selftrain.max_rounds": 2, "cluster.actors": 4}) == 3
    again.end()
    run = _client(t).get_run(run_id)
    assert run.data.params["selftrain.max_rounds"] == "0" and run.data.params["cluster.actors"] == "1"
    assert run.data.params["resume_1/selftrain.max_rounds"] == "2" and run.data.params["resume_2/cluster.actors"] == "4"
    note = run.data.tags[NOTE_TAG].splitlines()
    assert len(note) == 4 and note[0].startswith("Resumed run")
    assert note[1].startswith("- resume 1 at round 1: `selftrain.max_rounds` 0 -> 2")
    assert note[2].startswith("- resume 2 at round 3: `cluster.actors` 1 -> 4")
    assert note[3].startswith("- resume 3: no config change")
    assert run.data.tags["cemr.resumes"] == "3" and run.data.tags["cemr.resumed_from_round"] == "3"
    effective = json.loads(Path(_client(t).download_artifacts(run_id, EFFECTIVE_CONFIG, str(store / "dl-res")))
                           .read_text(encoding="utf-8"))
    assert effective == {"since_round": None, "resume": 3, "config": {"selftrain.max_rounds": 2, "cluster.actors": 4}}
    assert {a.path for a in _client(t).list_artifacts(run_id, "resume")} == {
        "resume/resume_1.json", "resume/resume_2.json", "resume/resume_3.json"}


def test_changed_params_compares_with_the_logged_strings():
    logged = {"a": "1", "b": '["x", "y"]', "c": "None"}
    assert changed_params(logged, {"a": 1, "b": ["x", "y"], "c": None}) == {}
    assert changed_params(logged, {"a": 2, "b": ["x"], "c": None, "d": 0.5}) == {
        "a": ("1", 2), "b": ('["x", "y"]', ["x"]), "d": (None, 0.5)}


def test_model_dir_as_registered_pyfunc(store):
    import pandas as pd
    import yaml

    model_dir = store / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"keyword": "高血压"}), encoding="utf-8")
    t = Tracker(experiment="models", store_dir=store)
    t.start_parent({"x": 1})
    uri = t.log_model_dir(model_dir, "cemr-test-tagger", predictor=f"{__name__}:FakePredictor", device="cpu")
    assert _client(t).get_run(t.parent_id).info.status == "RUNNING"  # still ours to end
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the fluent call left no global behind
    t.end()

    versions = _client(t).search_model_versions("name='cemr-test-tagger'")
    assert [str(v.version) for v in versions] == ["1"]
    expected = [[{"start": 2, "end": 5, "type": "疾病和诊断", "confidence": 0.9}], []]
    assert t.load_model(uri).predict(["既往高血压病史", "无"]) == expected
    registered = t.load_model("models:/cemr-test-tagger/1")
    assert registered.predict(pd.DataFrame({"text": ["既往高血压病史", "无"]})) == expected
    with pytest.raises(TrackingError, match="does not exist"):
        Tracker(experiment="models", store_dir=store).log_model_dir(store / "nope")

    # what was logged: code (no pickle), cemr's package, installable requirements
    logged = _download_model(t, uri, store / "dl-model")
    files = {p.relative_to(logged).as_posix() for p in logged.rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files and "serving.py" in files
    assert {"code/cemr/inference.py", "code/cemr/predictor.py", "code/cemr/serving.py",
            "artifacts/model/config.json"} <= files
    assert not any("__pycache__" in f for f in files)
    flavor = yaml.safe_load((logged / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and flavor["code"] == "code"
    assert flavor["config"] == {"predictor": f"{__name__}:FakePredictor", "device": "cpu", "batch_size": 64}
    reqs = (logged / "requirements.txt").read_text(encoding="utf-8").split()
    assert [r.split("==")[0] for r in reqs] == ["mlflow", *SERVING_DISTRIBUTIONS]
    assert not any("+" in r or r.startswith("cemr") for r in reqs)


def _download_model(tracker, uri, dst):
    from mlflow.artifacts import download_artifacts

    with fluent_tracking_uri(tracker.uri):
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def test_requirements_are_what_an_index_has(monkeypatch):
    from importlib import metadata

    versions = {"torch": "2.13.0+cpu", "numpy": "2.4.6"}
    monkeypatch.setattr(metadata, "version", lambda d: versions[d] if d in versions else
                        (_ for _ in ()).throw(metadata.PackageNotFoundError(d)))
    assert serving_requirements(["torch", "numpy"]) == ["torch==2.13.0", "numpy==2.4.6"]
    with pytest.raises(TrackingError, match="pytorch-crf is not installed"):
        serving_requirements(["torch", "pytorch-crf"])


def test_the_fluent_uri_is_restored(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    with fluent_tracking_uri("sqlite:////ours/mlflow.db"):
        assert mlflow.get_tracking_uri() == "sqlite:////ours/mlflow.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
    assert mlflow.get_tracking_uri() == "sqlite:////elsewhere/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(None)
    with fluent_tracking_uri("sqlite:////ours/mlflow.db"):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ and not mlflow.is_tracking_uri_set()


def test_texts_from_model_input():
    import pandas as pd

    from cemr.serving import texts_from_model_input

    assert texts_from_model_input("a") == ["a"]
    assert texts_from_model_input(["a", "b"]) == ["a", "b"]
    assert texts_from_model_input(pd.DataFrame({"text": ["x"], "id": [1]})) == ["x"]
    assert texts_from_model_input(pd.DataFrame({"sentence": ["y"]})) == ["y"]
    with pytest.raises(ValueError, match="'text' column"):
        texts_from_model_input(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ValueError, match="item 1"):
        texts_from_model_input(["a", 3])


def test_a_figure_is_closed_once_logged_enabled_or_not(store):
    from cemr.plots import pyplot

    plt = pyplot()
    for enabled in (False, True):
        t = Tracker(experiment="figures", store_dir=store, enabled=enabled)
        t.start_parent()
        fig = f1_per_round_figure([0], [0.5])
        t.log_plot(fig, "plots/f1.png")
        assert not plt.fignum_exists(fig.number)
        t.end()
