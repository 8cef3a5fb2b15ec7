"""Experiment tracking: every MLflow call of cemr lives here (model code never logs).

:class:`Tracker` wraps one MLflow run per bootstrap run (``cluster.bootstrap``): params, metrics
per round as steps of that run (step = round), artifacts, figures and the model directory logged
as an MLflow pyfunc model (and registered) that ``mlflow models serve`` serves: :mod:`cemr.serving`
logged as code, with cemr's package and installable requirements. The runs of a threshold sweep
nest under the sweep's run through the ``mlflow.parentRunId`` tag given to
:meth:`Tracker.start_parent`. A disabled tracker accepts every call and does nothing, so callers
need no ``if``.

Where runs go: ``MLFLOW_TRACKING_URI`` (environment) wins, then ``tracking_uri``, else a sqlite
store ``sqlite:///<store_dir>/mlflow.db`` (MLflow 3.17 refuses the old ``./mlruns`` file store).
A new experiment gets an explicit artifact location (``<store_dir>/mlartifacts/<experiment>``),
otherwise MLflow would write artifacts relative to the current directory.

Figures are :mod:`cemr.plots`'s, logged by :meth:`Tracker.log_plot` as a PNG with the numbers it
shows as JSON beside it.

A resumed run keeps the params of its first start (MLflow params cannot change);
:meth:`Tracker.record_resume` says what changed and what is in effect: tags, the run's
description, ``resume_<k>/<key>`` params and the ``config/effective.json`` artifact.

Patient data: raw EMR text is never logged by this module unless ``log_samples=True``
(``tracking.log_samples``; :meth:`Tracker.log_text_samples` and :meth:`Tracker.log_text_page`,
which the bootstrap uses for a few pseudo-labeled sentences and dev documents per round); params,
metrics and figures carry numbers and entity type names only. Callers that log their own files
with :meth:`Tracker.log_artifact` are responsible for their content.

MLflow is imported lazily (importing it costs seconds), so ``import cemr.tracking`` is cheap.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping, Sequence

DEFAULT_DB = "mlflow.db"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
DEFAULT_PREDICTOR = "cemr.predictor:Predictor"
RESUMES_TAG = "cemr.resumes"
NOTE_TAG = "mlflow.note.content"  # the run's description, shown at the top of its page in the MLflow UI
EFFECTIVE_CONFIG = "config/effective.json"


class TrackingError(RuntimeError):
    """A tracking call that cannot be honoured (no parent run, bad metric value ...)."""


def default_tracking_uri(store_dir: str | os.PathLike) -> str:
    """``sqlite:///<absolute store_dir>/mlflow.db``."""
    return "sqlite:///" + str(Path(store_dir).resolve() / DEFAULT_DB)


def resolve_tracking_uri(tracking_uri: str | None, store_dir: str | os.PathLike) -> str:
    """The URI actually used: env ``MLFLOW_TRACKING_URI``, else ``tracking_uri``, else sqlite."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if tracking_uri:
        return tracking_uri
    return default_tracking_uri(store_dir)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "default"


def param_value(value: Any) -> str:
    """A config value as an MLflow param string (JSON for lists/dicts, cut at MLflow's limit)."""
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 15] + "...[truncated]"
    return text


def changed_params(logged: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (logged value, new value)}`` of the keys of ``config`` (flat) whose param string
    differs from the one ``logged`` (a run's params, as MLflow returns them); a key never logged
    has ``None`` as its old value."""
    return {k: (logged.get(k), v) for k, v in sorted(config.items()) if logged.get(k) != param_value(v)}


def resume_note(resume: int, next_round: int | None, changes: Mapping[str, tuple[Any, Any]]) -> str:
    """One line of the run's description per resume: what changed, and where the values now in
    effect are."""
    where = f" at round {next_round}" if next_round is not None else ""
    if changes:
        shown = "; ".join(f"`{k}` {param_value(old)} -> {param_value(new)}" for k, (old, new) in changes.items())
    else:
        shown = "no config change"
    return (f"- resume {resume}{where}: {shown} (params keep the first start's values; in effect now: "
            f"params `resume_{resume}/*`, artifact `{EFFECTIVE_CONFIG}`)")


def metric_value(key: str, value: Any) -> float:
    """A metric as float; ``TrackingError`` naming the key for non-numbers."""
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TrackingError(f"metric {key!r}: expected a number, got {value!r}") from None
    return out


# ----------------------------------------------------------------------------------------------
# The logged model: code (cemr.serving), cemr's package, requirements
# ----------------------------------------------------------------------------------------------

# what importing cemr.predictor and loading a model directory imports (transformers: BERT
# featurizers); not gensim (word2vec pretraining only), pyarrow (shards), matplotlib, ray
SERVING_DISTRIBUTIONS = ("torch", "transformers", "pytorch-crf", "numpy", "safetensors", "pyyaml")


def serving_requirements(distributions: Sequence[str] = SERVING_DISTRIBUTIONS) -> list[str]:
    """``name==version`` of each installed distribution, as an index has it: the local version
    label dropped (``torch 2.13.0+cpu`` -> ``torch==2.13.0``, which a GPU server installs as its
    CUDA build). ``TrackingError`` for one that is not installed (the model could not run)."""
    from importlib import metadata

    from packaging.version import Version

    reqs = []
    for dist in distributions:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise TrackingError(f"{dist} is not installed, but a served cemr model needs it; "
                                f"install cemr's dependencies (pip install -e .) and log the model again") from None
        reqs.append(f"{dist}=={Version(version).public}")
    return reqs


def serving_code_file() -> str:
    """The models-from-code file the model is logged with (:mod:`cemr.serving`)."""
    return str(Path(__file__).with_name("serving.py"))


def cemr_package_dir() -> str:
    """cemr's package directory (``code_paths`` of the logged model: its code travels with it)."""
    return str(Path(__file__).resolve().parent)


def model_signature():
    """Input: one unnamed string column (a list of records, or a DataFrame of one column such as
    ``text``); param ``batch_size``. No output schema (a list of span lists per record)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from cemr.serving import DEFAULT_BATCH_SIZE

    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]))


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (the one that logs models) pointed at ``uri`` inside the block only:
    the global tracking URI and ``MLFLOW_TRACKING_URI`` (which ``mlflow.set_tracking_uri`` sets for
    subprocesses) are as they were afterwards."""
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    current = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous = current if current != env else None  # one the environment gives comes back with it
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: unset (the environment variable too)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


# ----------------------------------------------------------------------------------------------
# The tracker
# ----------------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run (a bootstrap run, or a sweep's run), started or reopened, and what is logged
    to it.

    ``tracking_uri``: None = env ``MLFLOW_TRACKING_URI`` or sqlite under ``store_dir``;
    ``experiment``: created on first use with ``artifact_location`` (default
    ``<store_dir>/mlartifacts/<experiment>``); ``enabled=False``: every call is a no-op;
    ``log_samples``: whether :meth:`log_text_samples` logs raw text. The run is ``parent_id``
    (every call without a ``run_id`` logs to it; the runs of a sweep nest under it).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "cemr",
        run_name: str | None = None,
        enabled: bool = True,
        *,
        store_dir: str | os.PathLike = ".",
        artifact_location: str | None = None,
        log_samples: bool = False,
    ):
        self.enabled = enabled
        self.experiment = experiment
        self.run_name = run_name
        self.store_dir = Path(store_dir)
        self.uri = resolve_tracking_uri(tracking_uri, store_dir)
        self.artifact_location = artifact_location
        self.log_samples = log_samples
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self._client = None

    @classmethod
    def from_config(cls, cfg: Any, run_dir: str | os.PathLike, enabled: bool = True) -> "Tracker":
        """From a :class:`cemr.config.TrackingConfig`; the default store sits beside ``run_dir``."""
        run_dir = Path(run_dir)
        return cls(
            tracking_uri=cfg.tracking_uri,
            experiment=cfg.experiment,
            run_name=cfg.run_name or run_dir.name,
            enabled=enabled,
            store_dir=run_dir.resolve().parent,
            log_samples=cfg.log_samples,
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.uri.startswith("sqlite:///"):
                Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment_id(self) -> str:
        if self.experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = self.artifact_location or (
                    self.store_dir.resolve() / "mlartifacts" / _safe_name(self.experiment)
                ).as_uri()
                self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
            elif exp.lifecycle_stage != "active":
                raise TrackingError(
                    f"experiment {self.experiment!r} is deleted in {self.uri}; restore it or choose another name"
                )
            else:
                self.experiment_id = exp.experiment_id
        return self.experiment_id

    def _run(self, run_id: str | None) -> str:
        run_id = run_id or self.parent_id
        if run_id is None:
            raise TrackingError("no run started: call start_parent() first")
        return run_id

    # -- runs -------------------------------------------------------------------------------

    def start_parent(
        self, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> str | None:
        """Start the parent run and log ``params`` (a flat dict: ``cemr.config.flatten``), also as the
        artifact ``config/effective.json`` (the config in effect; each resume replaces it)."""
        if not self.enabled:
            return None
        if self.parent_id is not None:
            raise TrackingError(f"parent run {self.parent_id} already started")
        run = self.client.create_run(self._experiment_id(), run_name=self.run_name, tags=dict(tags or {}))
        self.parent_id = run.info.run_id
        if params:
            self.log_params(params)
            self.log_dict({"since_round": 0, "resume": 0, "config": dict(params)}, EFFECTIVE_CONFIG)
        return self.parent_id

    def resume_parent(self, run_id: str) -> str | None:
        """Reopen an earlier parent run (``--resume``); its params stay as logged (what changed is
        added by :meth:`record_resume`)."""
        if not self.enabled:
            return None
        run = self.client.get_run(run_id)
        self.experiment_id = run.info.experiment_id
        self.client.update_run(run_id, status="RUNNING")
        self.parent_id = run_id
        return run_id

    def record_resume(self, changes: Mapping[str, tuple[Any, Any]], next_round: int | None,
                      config: Mapping[str, Any]) -> int | None:
        """Record on the parent run that it was resumed at round ``next_round`` (None: not a
        bootstrap run, e.g. a sweep) with ``changes`` (``{key: (old, new)}``) and ``config`` (flat)
        from then on. Params cannot change once logged, so the first start's values stay; resume
        number ``k`` (1, 2, ...) adds

        - tags ``cemr.resumes`` (``k``), ``cemr.resumed_from_round`` and ``cemr.resume_changes``
          (JSON ``{key: [old, new]}`` of this resume, ``{}`` when nothing changed);
        - a line to the run's description (``mlflow.note.content``, at the top of the run's page
          in the MLflow UI): the changed keys with old and new values (:func:`resume_note`);
        - a param ``resume_<k>/<key>`` per changed key, with its new value (searchable);
        - the artifact ``resume/resume_<k>.json``: the round, the changes and the whole config;
        - the artifact ``config/effective.json`` replaced: the whole config in effect now, and
          from which round and resume.

        Returns ``k`` (None when disabled)."""
        if not self.enabled:
            return None
        run_id = self._run(None)
        tags = self.client.get_run(run_id).data.tags
        k = int(tags.get(RESUMES_TAG, "0")) + 1
        pairs = {key: [old, new] for key, (old, new) in changes.items()}
        note = tags.get(NOTE_TAG, "").rstrip()
        if not note:
            note = "Resumed run: the values in effect after a resume differ from the params where listed here."
        note += "\n" + resume_note(k, next_round, changes)
        new_tags: dict[str, Any] = {RESUMES_TAG: k, NOTE_TAG: note,
                                    "cemr.resume_changes": json.dumps(pairs, ensure_ascii=False, sort_keys=True,
                                                                      default=str)}
        if next_round is not None:
            new_tags["cemr.resumed_from_round"] = next_round
        self.set_tags(new_tags, run_id=run_id)
        if pairs:
            self.log_params({f"resume_{k}/{key}": new for key, (_old, new) in pairs.items()}, run_id=run_id)
        self.log_dict({"resume": k, "next_round": next_round, "changes": pairs, "config": dict(config)},
                      f"resume/resume_{k}.json", run_id=run_id)
        self.log_dict({"since_round": next_round, "resume": k, "config": dict(config)}, EFFECTIVE_CONFIG,
                      run_id=run_id)
        return k

    def end(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.enabled and self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)
            self.parent_id = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")

    # -- values -----------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any], run_id: str | None = None) -> None:
        """Log a flat dict of params (values stringified; in batches of MLflow's limit)."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        run_id = self._run(run_id)
        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, run_id: str | None = None) -> None:
        """Log numeric metrics at ``step`` (e.g. the round) to ``run_id`` or the parent run."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        run_id = self._run(run_id)
        now = int(time.time() * 1000)
        items = [Metric(str(k), metric_value(str(k), v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        if not self.enabled:
            return
        run_id = self._run(run_id)
        for k, v in tags.items():
            self.client.set_tag(run_id, str(k), param_value(v))

    # -- artifacts --------------------------------------------------------------------------

    def log_artifact(
        self, path: str | os.PathLike, artifact_path: str | None = None, run_id: str | None = None
    ) -> None:
        """Log a file or a directory (recursively) as artifact(s)."""
        if not self.enabled:
            return
        path = Path(path)
        if not path.exists():
            raise TrackingError(f"{path}: artifact does not exist")
        run_id = self._run(run_id)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], filename: str, run_id: str | None = None) -> None:
        """Log a dict as a JSON (``.json``) or YAML (``.yaml``) artifact."""
        if not self.enabled:
            return
        self.client.log_dict(self._run(run_id), dict(data), filename)

    def log_figure(self, figure: Any, filename: str, run_id: str | None = None) -> None:
        """Log a matplotlib figure as an image artifact, then close it."""
        from cemr.plots import pyplot

        try:
            if self.enabled:
                self.client.log_figure(self._run(run_id), figure, filename)
        finally:
            pyplot().close(figure)

    def log_plot(self, figure: Any, filename: str, data: Mapping[str, Any] | None = None,
                 run_id: str | None = None) -> None:
        """A figure (:mod:`cemr.plots`) as ``filename`` (a ``.png``) and, with ``data``, the numbers
        it shows as the JSON beside it (``<same name>.json``); logging again replaces both."""
        if data is not None and self.enabled:
            self.log_dict(dict(data), str(Path(filename).with_suffix(".json")), run_id=run_id)
        self.log_figure(figure, filename, run_id=run_id)

    def log_text_samples(self, samples: Sequence[Mapping[str, Any]], filename: str, run_id: str | None = None) -> bool:
        """Log examples that contain raw text, only when ``log_samples=True``; returns whether it did."""
        if not self.enabled or not self.log_samples:
            return False
        self.client.log_dict(self._run(run_id), {"samples": list(samples)}, filename)
        return True

    def log_text_page(self, text: str, filename: str, run_id: str | None = None) -> bool:
        """Log a page that contains raw text (the HTML view of :mod:`cemr.review.html`), only when
        ``log_samples=True``; returns whether it did."""
        if not self.enabled or not self.log_samples:
            return False
        self.client.log_text(self._run(run_id), text, filename)
        return True

    # -- models -----------------------------------------------------------------------------

    def log_model_dir(
        self,
        model_dir: str | os.PathLike,
        register_name: str | None = None,
        *,
        name: str = "model",
        predictor: str = DEFAULT_PREDICTOR,
        device: str = "auto",
        batch_size: int = 64,
        run_id: str | None = None,
    ) -> str | None:
        """Log ``model_dir`` as an MLflow pyfunc model of this run and register it as
        ``register_name`` (a new version).

        The model is :mod:`cemr.serving` logged as code, cemr's package as its ``code_paths``,
        ``model_dir`` as the ``model_dir`` artifact, ``{predictor, device, batch_size}`` as its model
        config and :func:`serving_requirements` (plus MLflow's own pin) as its requirements: what
        ``mlflow models serve -m models:/<register_name>/<version>`` needs. ``predictor``:
        ``module:Class`` with ``.load(model_dir, device)`` and ``predict_documents(docs, batch_size=...)``
        (importable where the model is served).

        Returns the model URI (``models:/<model id>``), or None when disabled.
        """
        if not self.enabled:
            return None
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise TrackingError(f"{model_dir}: model directory does not exist")
        import mlflow

        run_id = self._run(run_id)
        status = self.client.get_run(run_id).info.status
        with fluent_tracking_uri(self.uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=serving_code_file(),
                code_paths=[cemr_package_dir()],
                artifacts={"model_dir": str(model_dir.resolve())},
                model_config={"predictor": predictor, "device": device, "batch_size": int(batch_size)},
                signature=model_signature(),
                registered_model_name=register_name,
                pip_requirements=serving_requirements(),
            )
        if status == "RUNNING":  # leaving the fluent block ended the run: it is still ours to end
            self.client.update_run(run_id, status="RUNNING")
        return info.model_uri

    def load_model(self, model_uri: str) -> Any:
        """Load a logged/registered pyfunc model (``models:/...``) from this tracker's store."""
        import mlflow.pyfunc

        with fluent_tracking_uri(self.uri):
            return mlflow.pyfunc.load_model(model_uri)
