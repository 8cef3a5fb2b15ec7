"""The served model: cemr's MLflow pyfunc, logged as code (MLflow's models-from-code).

:meth:`cemr.tracking.Tracker.log_model_dir` logs this file as the model's code (no pickle), with
cemr's package directory as the model's ``code_paths`` (the code travels with the model; loading
puts it first on ``sys.path``), the model directory as the ``model_dir`` artifact and
``{"predictor", "device", "batch_size"}`` as the model config. MLflow runs this file when it loads
the model; the last line hands it the model object (``mlflow.models.set_model``).

Serving (``mlflow models serve -m models:/<name>/<version>``): ``POST /invocations`` with
``{"inputs": ["record", ...]}`` or ``{"dataframe_split": {"columns": ["text"], "data": [[...]]}}``
answers ``{"predictions": [[{"start", "end", "type", "confidence"}, ...], ...]}``: one list per
record, offsets into that record (end exclusive), records of any length, tagged by
:func:`cemr.inference.tag_records` (what ``cemr predict`` runs).

Importing this module imports MLflow and sets MLflow's "model from code" to a fresh
:class:`CemrPyfuncModel` (what ``set_model`` does); nothing else in cemr imports it.
"""
from __future__ import annotations

from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

DEFAULT_PREDICTOR = "cemr.predictor:Predictor"
DEFAULT_DEVICE = "auto"  # the GPU when the server has one
DEFAULT_BATCH_SIZE = 64


def texts_from_model_input(model_input: Any) -> list[str]:
    """Texts from a pyfunc input: a list/array of str, a str, or a DataFrame with a ``text`` column
    (or a single column). ``ValueError`` naming the item or the columns otherwise."""
    if isinstance(model_input, str):
        return [model_input]
    columns = getattr(model_input, "columns", None)
    if columns is not None:
        names = list(columns)
        if "text" in names:
            col = model_input["text"]
        elif len(names) == 1:
            col = model_input[names[0]]
        else:
            raise ValueError(f"expected a 'text' column, got columns {names}")
        items = col.tolist()
    else:
        items = list(model_input)
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"input item {bad[0]} is {type(items[bad[0]]).__name__}, expected str")
    return items


class CemrPyfuncModel(PythonModel):
    """A cemr model directory (the ``model_dir`` artifact) as an MLflow pyfunc.

    Model config (all optional): ``predictor`` (``module:Class`` with ``.load(model_dir, device)``
    and ``predict_documents``; default :class:`cemr.predictor.Predictor`), ``device`` (default
    ``auto``), ``batch_size`` (default 64; a request's ``params`` may override it).

    ``predict(texts) -> [[{"start", "end", "type", "confidence"}, ...], ...]``.
    """

    def __init__(self) -> None:
        self._model = None
        self.batch_size = DEFAULT_BATCH_SIZE

    def load_context(self, context: Any) -> None:
        from cemr.selftrain import load_predictor

        config = getattr(context, "model_config", None) or {}
        self.batch_size = int(config.get("batch_size", DEFAULT_BATCH_SIZE))
        self._model = load_predictor(config.get("predictor", DEFAULT_PREDICTOR), context.artifacts["model_dir"],
                                     config.get("device", DEFAULT_DEVICE))

    # no type hints: MLflow would read them as an input schema (the signature logged is the schema)
    def predict(self, context, model_input, params=None):
        from cemr.inference import tag_records

        if self._model is None:
            raise RuntimeError("CemrPyfuncModel.predict before load_context: load it with mlflow.pyfunc.load_model")
        texts = texts_from_model_input(model_input)
        batch_size = int((params or {}).get("batch_size") or self.batch_size)
        return tag_records(self._model, texts, batch_size)


set_model(CemrPyfuncModel())
