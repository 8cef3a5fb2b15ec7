"""Self-training (bootstrapping) logic: pure functions and the persisted run state. No Ray here.

The loop (driven by :func:`cluster.bootstrap.run_bootstrap`, ``jobs.bootstrap``) is: round 0 trains
on gold only; each later round predicts the unlabeled pool with the best model so far, keeps the
confident candidates and optionally caps them (the selection policy and its modes:
:mod:`cemr.selection`), retrains on gold + pseudo-labels and evaluates on dev (and test). It stops
at ``max_rounds`` or when dev F1 has not improved for ``patience`` rounds (:func:`should_stop`);
the best round is the one with the highest dev F1 (:func:`best_round`).

Bookkeeping modes (``selftrain.mode``, :data:`BOOKKEEPING_MODES`): ``rederive`` trains round ``r``
on gold + the pseudo-labels derived in round ``r`` only (the newest model relabels everything);
``accumulate`` keeps every sentence once it was pseudo-labeled, with the label of the round that
first kept it (the sets are merged on disk: ``cluster.pseudosets.merge_pseudo_dirs``).

Sentences are identified by a key ``(doc_id, sent_id)`` (:func:`sentence_key`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

from cemr.corpus.document import Span
from cemr.metrics import PRF, match_counts
from cemr.outputs import atomic_write_text
from cemr.stopping import Patience

BOOKKEEPING_MODES = ("rederive", "accumulate")

STATE_FILE = "state.json"
STATE_VERSION = 1

SentenceKey = tuple[str, int]


class StateError(ValueError):
    """A run state file that cannot be read, naming the file and the problem."""


def sentence_key(doc_id: str, sent_id: int) -> SentenceKey:
    """The key of one sentence: ``(doc_id, sent_id)``, hashable and JSON-friendly."""
    return (str(doc_id), int(sent_id))


# ----------------------------------------------------------------------------------------------
# Predictors (what pseudo-labeling runs)
# ----------------------------------------------------------------------------------------------


def resolve_factory(factory: Any) -> Any:
    """``"package.module:Name"`` -> the object; anything else is returned as is."""
    if not isinstance(factory, str):
        return factory
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"predictor factory {factory!r}: expected 'package.module:Name'")
    import importlib

    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"predictor factory {factory!r}: {module_name} has no {attr}") from None
    return obj


def load_predictor(factory: Any, model_dir: str, device: str, **kwargs: Any) -> Any:
    """Build a predictor: ``factory.load(model_dir, device, **kwargs)`` when the factory (or what
    its ``module:Name`` path names) has ``load`` (``cemr.predictor.Predictor``), else
    ``factory(model_dir, device, **kwargs)``."""
    obj = resolve_factory(factory)
    load = getattr(obj, "load", None)
    if callable(load):
        return load(model_dir, device, **kwargs)
    if callable(obj):
        return obj(model_dir, device, **kwargs)
    raise TypeError(f"predictor factory {factory!r} is neither callable nor has a load() method")


def unpack_prediction(item: Any) -> tuple[list[Any], float | None]:
    """One sentence's predictor output -> ``(predictions, sentence_confidence or None)``.

    Accepts a ``cemr.predictor.SentencePrediction`` (``entities`` + ``confidence``) or a plain
    list of predictions (no sentence confidence).
    """
    entities = getattr(item, "entities", None)
    if entities is not None:
        conf = getattr(item, "confidence", None)
        return list(entities), None if conf is None else float(conf)
    if isinstance(item, (list, tuple)):
        return list(item), None
    raise TypeError(f"unexpected predictor output for one sentence: {type(item).__name__}")


# ----------------------------------------------------------------------------------------------
# Rounds, stopping, bookkeeping
# ----------------------------------------------------------------------------------------------


@dataclass
class RoundRecord:
    """What one self-training round produced. Round 0 is the gold-only model.

    ``pseudo_counts``: sentences per status of the pseudo-labeling that fed this round's training
    (empty for round 0); ``pseudo_entities``: kept entities per type; ``pseudo_prf``: precision /
    recall / F1 of the pseudo-labels against hidden gold (low-resource protocol), when known.
    ``extra``: the rest of the round's report, as ``cluster.bootstrap`` writes it: ``dev`` /
    ``test`` (evaluation reports), ``times``, ``pseudo`` (the pseudo-labeling result),
    ``pseudo_metrics`` (its flat ``pseudo/*`` metrics) and ``train``.
    """

    round: int
    dev_f1: float
    dev_precision: float = 0.0
    dev_recall: float = 0.0
    threshold: float | None = None
    train_sentences: int = 0
    pseudo_sentences: int = 0
    pseudo_counts: dict[str, int] = field(default_factory=dict)
    pseudo_entities: dict[str, int] = field(default_factory=dict)
    pseudo_prf: dict[str, float] | None = None
    model_dir: str | None = None
    pseudo_dir: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.round < 0:
            raise ValueError(f"round must be >= 0, got {self.round}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundRecord":
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown round record field(s): {', '.join(unknown)}")
        return cls(**dict(data))


def best_round(history: Sequence[RoundRecord]) -> RoundRecord:
    """The round with the highest dev F1 (the earliest one on ties)."""
    if not history:
        raise ValueError("no completed round yet")
    return max(history, key=lambda r: (r.dev_f1, -r.round))


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop, and why; truthy when the loop should stop."""

    stop: bool
    reason: str

    def __bool__(self) -> bool:
        return self.stop


def should_stop(
    history: Sequence[RoundRecord], patience: int, max_rounds: int, min_delta: float = 0.0
) -> StopDecision:
    """Stopping rule of the bootstrap loop.

    ``history``: completed rounds in order (round 0 = gold only). Stop when the last completed
    round is ``>= max_rounds``, or when ``patience >= 1`` rounds have passed since the best dev F1
    (an improvement must exceed the best so far by more than ``min_delta``). ``patience <= 0``
    disables early stopping. The rule is :class:`cemr.stopping.Patience`, as for epochs.
    """
    if not history:
        return StopDecision(False, "no round completed yet")
    rounds = [r.round for r in history]
    if rounds != sorted(set(rounds)):
        raise ValueError(f"history rounds must be increasing and unique, got {rounds}")
    last = history[-1]
    if last.round >= max_rounds:
        return StopDecision(True, f"reached max_rounds={max_rounds}")
    rule = Patience(patience, min_delta=min_delta)
    for rec in history:
        rule.update(rec.round, rec.dev_f1)
    if rule.exhausted:
        return StopDecision(
            True,
            f"dev F1 has not improved for {rule.waited} round(s) (best {rule.best:.4f} in round {rule.best_step})",
        )
    return StopDecision(False, f"continue (best {rule.best:.4f} in round {rule.best_step})")


def score_pseudo_labels(
    kept: Mapping[Hashable, Iterable[Span]], gold: Mapping[Hashable, Iterable[Span]]
) -> PRF:
    """Precision / recall / F1 of pseudo-labels against hidden gold (exact span and type).

    ``kept``: the pseudo-labeled sentences ``{key: spans}``; ``gold``: the hidden gold of the pool
    ``{key: spans}``. Only sentences with gold are scored: kept sentences without a gold entry
    (other unlabeled sources) are ignored. Recall counts every gold entity, including those of
    sentences that were not kept, so it says how much of the pool's gold the pseudo-labels recover.
    """
    tp = fp = fn = 0
    for key, gold_spans in gold.items():
        for t_tp, t_fp, t_fn in match_counts(gold_spans, kept.get(key, ())).values():
            tp, fp, fn = tp + t_tp, fp + t_fp, fn + t_fn
    return PRF.from_counts(tp, fp, fn)


# ----------------------------------------------------------------------------------------------
# Persisted run state (for --resume)
# ----------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """The state of a bootstrap run, saved as ``<run_dir>/state.json`` after every round.

    ``rounds``: completed rounds in order; ``paths``: named paths of the run (data, pretrain ...);
    ``finished`` / ``stop_reason``: set when the loop ends; ``config``: the flattened config the
    run started with (a resumed run can check it did not change).
    """

    rounds: list[RoundRecord] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    stop_reason: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    @property
    def next_round(self) -> int:
        return self.rounds[-1].round + 1 if self.rounds else 0

    @property
    def best(self) -> RoundRecord | None:
        return best_round(self.rounds) if self.rounds else None

    def add_round(self, record: RoundRecord) -> None:
        """Append a completed round; its number must be :attr:`next_round`."""
        if record.round != self.next_round:
            raise ValueError(f"expected round {self.next_round}, got round {record.round}")
        self.rounds.append(record)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "version": self.version,
            "completed_rounds": [r.to_dict() for r in self.rounds],
            "best_round": best.round if best else None,
            "paths": dict(self.paths),
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunState":
        version = data.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"state version {version!r} is not supported (expected {STATE_VERSION})")
        return cls(
            rounds=[RoundRecord.from_dict(r) for r in data.get("completed_rounds", [])],
            paths={str(k): str(v) for k, v in data.get("paths", {}).items()},
            finished=bool(data.get("finished", False)),
            stop_reason=data.get("stop_reason"),
            config=dict(data.get("config", {})),
        )


def save_state(run_dir: str | os.PathLike, state: RunState) -> Path:
    """Write ``state`` to ``<run_dir>/state.json`` atomically; returns the path."""
    path = Path(run_dir) / STATE_FILE
    atomic_write_text(path, json.dumps(state.to_dict(), ensure_ascii=False, indent=1, default=str) + "\n")
    return path


def load_state(run_dir: str | os.PathLike) -> RunState | None:
    """Read ``<run_dir>/state.json``; None when there is none. Raises :class:`StateError` naming
    the file for unreadable or malformed content."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: cannot read run state: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(f"{path}: run state must be a JSON object, got {type(data).__name__}")
    try:
        return RunState.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise StateError(f"{path}: bad run state: {exc}") from exc
