"""The registered model served as MLflow serves it: ``mlflow models serve`` of the real small
model on loopback (``--env-manager local``: no environment is built), from its own code and
requirements."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cemr.corpus.document import Document
from cemr.predictor import Predictor
from cemr.tracking import SERVING_DISTRIBUTIONS, Tracker
from tagger_fakes import tiny_documents, tiny_model_dir

NAME = "cemr-served"
START_TIMEOUT_S = 120  # bounded: a server that is not up by then fails the test with its log
REQUEST_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def registered(model_dir, tmp_path_factory):
    """The tiny real model logged and registered as version 1 in a sqlite store: (tracker, model dir)."""
    root = tmp_path_factory.mktemp("served")
    tracker = Tracker(experiment="serving", store_dir=root)
    tracker.start_parent()
    tracker.log_model_dir(model_dir, NAME)
    tracker.end()
    return tracker, model_dir


def _record() -> str:
    text = "".join(d.text for d in tiny_documents(50, seed=5))
    assert len(text) >= 1000
    return text


def _expected(model_dir, texts):
    preds = Predictor.load(model_dir).predict_documents([Document(str(i), t) for i, t in enumerate(texts)])
    return [[(p.span.start, p.span.end, p.span.type, p.confidence) for p in preds[str(i)]] for i in range(len(texts))]


def _as_tuples(served):
    return [[(e["start"], e["end"], e["type"], e["confidence"]) for e in rec] for rec in served]


def _same(got, want):
    assert [[s[:3] for s in rec] for rec in got] == [[s[:3] for s in rec] for rec in want]
    assert [[s[3] for s in rec] for rec in got] == [[pytest.approx(s[3], abs=1e-5) for s in rec] for rec in want]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(tracker, tmp_path):
    """The environment of a server that has no cemr installed: ``MLFLOW_TRACKING_URI`` set, and
    the installed cemr hidden behind a ``cemr`` on ``PYTHONPATH`` that refuses to import. The
    model's own copy of cemr (its code path, put first on ``sys.path`` when it loads) is found
    before it; a model without one fails to load."""
    hide = tmp_path / "no-installed-cemr"
    (hide / "cemr").mkdir(parents=True, exist_ok=True)
    (hide / "cemr" / "__init__.py").write_text(
        "raise ImportError('cemr is not installed on this server: the model must bring its own code')\n",
        encoding="utf-8")
    return dict(os.environ, MLFLOW_TRACKING_URI=tracker.uri, PYTHONPATH=str(hide),
                NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


def _request(url, body=None, timeout=REQUEST_TIMEOUT_S):
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8")


def _stop(proc):
    """End the server's process group (the CLI and the workers it started), bounded."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def test_tagging_imports_nothing_the_requirements_leave_out(model_dir):
    """Loading a model directory and tagging, as the served model does, import no gensim
    (pretraining only), pyarrow, ray or matplotlib: its requirements do not list them."""
    assert not {"gensim", "pyarrow", "ray", "matplotlib"} & set(SERVING_DISTRIBUTIONS)
    code = ("import sys; from cemr.selftrain import load_predictor; from cemr.inference import tag_records; "
            "p = load_predictor('cemr.predictor:Predictor', sys.argv[1], 'cpu'); "
            "tag_records(p, ['患者有糖尿病。']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gensim', 'pyarrow', 'ray', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]"]


@pytest.mark.slow
def test_the_loaded_model_runs_its_own_cemr_code(registered, tmp_path):
    tracker, _ = registered
    script = ("import mlflow.pyfunc, sys; m = mlflow.pyfunc.load_model(sys.argv[1]); "
              "print(m.predict(['患者有糖尿病。'])); print(sys.modules['cemr'].__file__)")
    out = subprocess.run([sys.executable, "-c", script, f"models:/{NAME}/1"], env=_server_env(tracker, tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    cemr_file = Path(out.stdout.strip().splitlines()[-1])
    assert cemr_file.parts[-3:] == ("code", "cemr", "__init__.py")  # the copy shipped with the model
    assert Path(__file__).resolve().parents[1] not in cemr_file.resolve().parents


@pytest.mark.slow
def test_mlflow_serves_the_registered_model(registered, tmp_path):
    tracker, model_dir = registered
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{NAME}/1",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=_server_env(tracker, tmp_path), cwd=tmp_path, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if _request(base + "/ping", timeout=5)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no /ping after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

        record = _record()
        status, body = _request(base + "/invocations", {"inputs": [record]})
        assert status == 200
        served = json.loads(body)["predictions"]
        want = _expected(model_dir, [record])
        _same(_as_tuples(served), want)
        assert len(want[0]) > 20 and max(s[0] for s in want[0]) > 900  # document offsets, far past max_len 64

        texts = [record[:300], "无"]
        split = {"columns": ["text"], "data": [[t] for t in texts]}
        status, body = _request(base + "/invocations", {"dataframe_split": split, "params": {"batch_size": 2}})
        assert status == 200
        _same(_as_tuples(json.loads(body)["predictions"]), _expected(model_dir, texts))
    finally:
        _stop(proc)
