"""Tracking round trips against a real sqlite MLflow store in tmp_path."""
import json
import os
from pathlib import Path

import pytest

from cemr.config import TrackingConfig
from cemr.corpus.document import Span
from cemr.selftrain import RoundRecord
from cemr.tracking import (
    SERVING_DISTRIBUTIONS,
    Tracker,
    TrackingError,
    f1_vs_round_figure,
    fluent_tracking_uri,
    line_figure,
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
    t.log_dict({"a": 1}, "a.json")
    t.plot_f1_vs_round([RoundRecord(0, 0.5)])
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
        history.append(RoundRecord(rnd, f1, pseudo_prf={"f1": 0.5 + rnd / 10} if rnd else None))
    t.log_dict({"rounds": len(history)}, "summary.json")
    report = store / "report.txt"
    report.write_text("numbers only\n", encoding="utf-8")
    t.log_artifact(report, "reports")
    t.plot_f1_vs_round(history)
    t.plot_f1_vs_threshold([0.5, 0.6, 0.7], [0.6, 0.65, 0.64])
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
    assert {"summary.json", "reports", "plots"} <= top
    assert {a.path for a in client.list_artifacts(parent, "plots")} == {
        "plots/f1_vs_round.png", "plots/f1_vs_threshold.png"}
    local = Path(client.download_artifacts(parent, "summary.json", str(store / "dl")))
    assert json.loads(local.read_text(encoding="utf-8")) == {"rounds": 2}
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
    quiet = Tracker(experiment="samples", store_dir=store)
    quiet.start_parent()
    assert quiet.log_text_samples(samples, "samples.json") is False
    assert [a.path for a in _client(quiet).list_artifacts(quiet.parent_id)] == []
    loud = Tracker(experiment="samples", store_dir=store, log_samples=True)
    loud.start_parent()
    assert loud.log_text_samples(samples, "samples.json") is True
    assert [a.path for a in _client(loud).list_artifacts(loud.parent_id)] == ["samples.json"]


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


def test_figures_check_their_series():
    fig = f1_vs_round_figure([0, 1, 2], [0.5, 0.6, 0.62], [0.7, 0.8, 0.75])
    assert [line.get_label() for line in fig.axes[0].lines] == ["dev F1", "pseudo-label F1"]
    with pytest.raises(ValueError, match="2 points for 3"):
        line_figure([1, 2, 3], {"a": [1, 2]}, title="t", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="nothing to plot"):
        line_figure([], {}, title="t", xlabel="x", ylabel="y")
