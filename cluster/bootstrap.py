"""The bootstrap (self-training) run on Ray: stages, rounds, tracking, resume.

:func:`run_bootstrap` drives one run directory (:class:`cemr.pipeline.RunLayout`, which must be on
storage every node of the cluster sees)::

    init Ray -> MLflow parent run (every config value a param) -> state.json
    prepare + pretrain      one Ray task, skipped when data/ and pretrain/ are already written
    components              on the driver (labels, vocabulary written once to components/)
    round 0                 Ray Train on gold train only
    round r >= 1            pseudo-labeling of data/unlabeled with the best model so far (actors kept
                            across rounds: cluster.labeler_pool)
                            (selftrain.threshold, cluster.pseudolabel) -> Ray Train on gold +
                            pseudo-labels (rederive: this round's; accumulate: every round's, first
                            round wins: cluster.pseudosets), a new tagger or, with
                            selftrain.warm_start, one starting from the model that pseudo-labeled
    after every round       dev + test evaluation (micro and per type) with the Predictor, the
                            calibration of its confidences on dev (cluster.round_metrics.calibration),
                            pseudo-label precision/recall against data/heldout when present (in all
                            and per type), metrics on the parent run at step = round
                            (cluster.round_metrics), a report JSON artifact, the plots (below),
                            with tracking.log_samples a few of the round's pseudo-labeled sentences
                            (samples/round_<r>.json, samples/round_<r>_pseudo.html) and dev
                            documents tagged by its model (samples/round_<r>_dev.html), state.json
                            saved (atomically)
    stop                    selftrain.max_rounds or selftrain.patience (cemr.selftrain.should_stop)
    end                     the plots again; best_round, best_dev_f1 and best_test_f1 (the test F1
                            of the dev-selected round); that round's model logged as an MLflow
                            pyfunc model and registered (tracking.register_model)

Plots (:mod:`cemr.plots`, each PNG with its numbers as JSON beside it), replaced after every round:
``plots/f1_vs_round.png`` (dev and test F1 per round, the dev-selected round marked),
``plots/pseudo_labels.png`` (entities kept per type per round and, with hidden gold, their
precision per type), and one ``plots/reliability/round_<r>.png`` per round (the reliability
diagram of its dev predictions, with the confidence the selection policy thresholds: per entity,
or per sentence in ``selftrain.selection: sentence``; its ECE is the metric ``dev_ece``).

GPUs are asked for exactly as configured (``cluster.use_gpu``, ``cluster.actor_num_gpus``) and
waited for; when they do not come the run stops, or with ``cluster.cpu_fallback`` runs on the CPU
and records it (:mod:`cluster.runtime`). The threshold sweep over such runs is :mod:`cluster.sweep`.

Resume (``resume=True``): completed rounds recorded in ``state.json`` are not redone; the loop
continues with the next round and reopens the MLflow parent run whose id the state holds
(``state.paths["mlflow_run"] = "runs:/<id>"``, with ``mlflow_tracking_uri``). A round cut off
while training continues from its latest Ray Train checkpoint (``cluster.train``). A run whose
state has no MLflow run yet (a seeded sweep member) gets a new one, and the rounds already in the
state are logged to it.

The config of a resumed run is compared with the one in ``state.json``
(:func:`check_resume_config`). A changed key is refused unless it is in :data:`SAFE_ON_RESUME`:
``run_dir``, ``name``, ``tracking.*`` (where it is logged), ``cluster.*`` (where and with what
resources it runs; not ``cluster.num_workers``, which changes the effective batch of Ray Train),
``sweep.*`` (read by the sweep, not by a run), ``selftrain.max_rounds`` and
``selftrain.patience`` (when the loop stops), ``train.device``, ``train.eval_batch_size`` and
``model.feature_cache_mb`` (how, not what, it computes). The other ``selftrain.*`` keys are read
by pseudo-labeling rounds only: they may change while no round >= 1 is completed or under way
(a gold-only ``jobs.train`` run continued by ``jobs.bootstrap``, the sweep's shared base).
Everything else (data, lexicon, model, training) is fixed for the life of a run. The stages of
``data/``, ``pretrain/`` and ``components/`` are checked against their own markers as well
(:mod:`cemr.fingerprint`). The MLflow params of a resumed run stay those of its first start
(MLflow params cannot change): each resume is recorded on the run (:meth:`cemr.tracking.Tracker.
record_resume`: the round it resumed from, the changed keys with their old and new values, the
config used from then on; the run's description lists each resume, and the artifact
``config/effective.json`` holds the config in effect).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cemr.config import Config, ConfigError, flatten
from cemr.outputs import atomic_write_text
from cemr.pipeline import RunLayout, stages_done
from cemr.selection import KEPT
from cemr.progress import say
from cemr.selftrain import RoundRecord, RunState, best_round, load_state, save_state, should_stop
from cluster.pseudosets import (
    entity_counts,
    merge_pseudo_dirs,
    pseudo_page,
    pseudo_samples,
    score_against_heldout,
    type_share_of,
)
from cluster.round_metrics import (
    calibration,
    f1_series,
    final_metrics,
    pseudo_series,
    round_metrics,
    round_test_f1,
    stage_metrics,
)

Log = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[1]
MLFLOW_RUN_KEY = "mlflow_run"
MLFLOW_URI_KEY = "mlflow_tracking_uri"
RUNS_PREFIX = "runs:/"
# keys a resumed run may change (a key ending in "." stands for its section): where and how the
# work runs or is logged, and when the loop stops; none of them changes what a round computes
SAFE_ON_RESUME = ("run_dir", "name", "tracking.", "cluster.", "sweep.", "selftrain.max_rounds",
                  "selftrain.patience", "train.device", "train.eval_batch_size", "model.feature_cache_mb")
# ... except: more Ray Train workers is a larger effective batch
UNSAFE_ON_RESUME = ("cluster.num_workers",)
# read by pseudo-labeling rounds (r >= 1) only: may change while no such round has started
SELFTRAIN_ONLY = ("selftrain.",)
NOT_COMPARED_ON_RESUME = ("run_dir",)  # the same directory, however it is spelled
SAMPLE_DOCUMENTS = 20  # dev documents per round in samples/round_<r>_dev.html (tracking.log_samples)
F1_PLOT = "plots/f1_vs_round.png"
PSEUDO_PLOT = "plots/pseudo_labels.png"


class BootstrapError(RuntimeError):
    """A run that cannot start or continue (its state, its directory or its config)."""


class ResumeConfigError(BootstrapError, ConfigError):
    """``--resume`` with a config the run cannot continue with (a config error: jobs exit 2)."""


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def changed_config_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` of the flattened config keys that differ (``run_dir``
    aside; a key present on one side only has ``None`` on the other). A key the old run's config
    lacks, set to its default, is no change: it was added to cemr after the run started, and a new
    key's default keeps the behaviour from before it existed (``model.bigram.enabled: false``)."""
    from cemr.config import Config, flatten

    defaults = flatten(Config())
    keys = set(old) | set(new)
    return {k: (old.get(k), new.get(k)) for k in sorted(keys)
            if not _matches(k, NOT_COMPARED_ON_RESUME) and old.get(k) != new.get(k)
            and not (k not in old and k in defaults and new.get(k) == defaults[k])}


def resume_refused(key: str, selftrain_started: bool) -> bool:
    """Whether ``key`` may not change on resume: everything but :data:`SAFE_ON_RESUME` (less
    :data:`UNSAFE_ON_RESUME`), and :data:`SELFTRAIN_ONLY` keys once a round >= 1 has started."""
    if _matches(key, SAFE_ON_RESUME) and not _matches(key, UNSAFE_ON_RESUME):
        return False
    return selftrain_started or not _matches(key, SELFTRAIN_ONLY)


def check_resume_config(old: Mapping[str, Any], new: Mapping[str, Any], state_path: str | os.PathLike,
                        selftrain_started: bool = True) -> dict[str, tuple[Any, Any]]:
    """The keys changed since the run started (``{key: (old, new)}``), when all may change
    (:func:`resume_refused`); :class:`ResumeConfigError` naming the others, their values and the rule."""
    changed = changed_config_keys(old, new)
    refused = [k for k in changed if resume_refused(k, selftrain_started)]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise ResumeConfigError(
            f"{state_path}: cannot resume: {shown} changed since the run started; the rounds already trained "
            f"and those still to run would not be one experiment. Only {', '.join(SAFE_ON_RESUME)} may change "
            f"on resume (not {', '.join(UNSAFE_ON_RESUME)}), and selftrain.* until round 1 starts. Resume with "
            f"the values of the run (its config is in {state_path}) or choose a new run_dir")
    return changed


def selftrain_started(state: RunState, layout: RunLayout) -> bool:
    """Whether a pseudo-labeling round (r >= 1) is completed or under way (its directory exists)."""
    return any(r.round >= 1 for r in state.rounds) or (
        state.next_round >= 1 and layout.round_dir(state.next_round).exists())


# ----------------------------------------------------------------------------------------------
# Stages (prepare + pretrain in one Ray task)
# ----------------------------------------------------------------------------------------------


def _stages(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Prepare + pretrain in this process (the body of the Ray task)."""
    from cemr.pipeline import prepare_data, pretrain_stage
    from cemr.training import resolve_device

    layout = RunLayout(Path(run_dir))  # logs by say, on stderr: Ray forwards it to the driver's stderr
    t0 = time.perf_counter()
    prep = prepare_data(cfg, layout, say)
    t1 = time.perf_counter()
    pre = pretrain_stage(cfg, layout, resolve_device(cfg.train.device), say)
    t2 = time.perf_counter()
    return {"prepare": prep, "pretrain": pre, "times": {"prepare": t1 - t0, "pretrain": t2 - t1}}


def run_stages(cfg: Config, layout: RunLayout, log: Log = say) -> dict[str, Any]:
    """Prepare and pretrain as one Ray task (``cluster.cpus_per_worker`` CPUs, and a GPU with
    ``cluster.use_gpu``: asked for and waited for as :func:`cluster.runtime.worker_resources` says,
    the CPU only with ``cluster.cpu_fallback``); read back when both are already done for this
    config. A stage made from another config stops the run here, on the driver
    (:class:`cemr.fingerprint.StaleStageError`): the run directory and the data inputs must be
    visible from the driver."""
    import ray

    from cluster.runtime import worker_resources

    if stages_done(cfg, layout):
        log(f"stages: {layout.data} and {layout.pretrain} already written for this config")
        return _stages(cfg, str(layout.root)) | {"times": {"prepare": 0.0, "pretrain": 0.0}, "skipped": True}
    res = worker_resources(cfg.cluster)
    task = ray.remote(_stages).options(num_cpus=res["cpus_per_worker"], num_gpus=1 if res["use_gpu"] else 0,
                                       name="cemr_prepare_pretrain")
    out = ray.get(task.remote(cfg, str(layout.root)))
    log(f"stages: prepare {out['times']['prepare']:.1f}s, pretrain {out['times']['pretrain']:.1f}s")
    return out | {"skipped": False}


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@dataclass
class BootstrapSummary:
    """What a bootstrap run ended with (also written to ``<run_dir>/summary.json``)."""

    run_dir: str
    rounds: list[dict[str, Any]]
    best_round: int | None
    best_dev_f1: float
    best_test_f1: float | None  # the test F1 of the dev-selected round
    best_test: dict[str, Any] | None
    best_model_dir: str | None
    stop_reason: str | None
    mlflow_run_id: str | None
    tracking_uri: str | None
    model_uri: str | None = None
    resumed_from_round: int | None = None
    rounds_run: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def local_runtime_env() -> dict[str, Any]:
    """For a Ray instance this process starts: workers import ``cemr``/``cluster`` from this checkout."""
    pythonpath = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"env_vars": {"PYTHONPATH": pythonpath}}


def connect(cfg: Config, log: Log = say):
    """Join the configured cluster or start a local instance (:func:`cluster.runtime.init_ray`)."""
    from cluster.runtime import init_ray, target_address

    env = None if target_address(cfg.cluster) else local_runtime_env()
    ctx = init_ray(cfg.cluster, runtime_env=env)
    log(f"ray: {'started' if ctx.local else 'joined'} {ctx.address} {ctx.resources}")
    return ctx


def _driver_device(cfg: Config, log: Log) -> Any:
    from cemr.training import resolve_device

    try:
        return resolve_device(cfg.train.device)
    except ValueError as exc:
        log(f"evaluation on the driver: {exc}; using the CPU")
        return resolve_device("cpu")


def _open_tracker(cfg: Config, layout: RunLayout, state: RunState, parent_run_id: str | None,
                  kind: str, log: Log):
    """The run's Tracker: reopens the parent run stored in ``state`` or starts a new one (nested
    under ``parent_run_id`` when given). Returns ``(tracker, new_run)``."""
    from cemr.tracking import Tracker

    tracker = Tracker.from_config(cfg.tracking, layout.root)
    stored = state.paths.get(MLFLOW_RUN_KEY, "")
    if stored.startswith(RUNS_PREFIX):
        if state.paths.get(MLFLOW_URI_KEY) and state.paths[MLFLOW_URI_KEY] != tracker.uri:
            log(f"tracking: the run was started in {state.paths[MLFLOW_URI_KEY]}; continuing there")
            tracker.uri = state.paths[MLFLOW_URI_KEY]
        tracker.resume_parent(stored[len(RUNS_PREFIX):])
        return tracker, False
    tags = {"cemr.kind": kind, "cemr.name": cfg.name, "cemr.run_dir": str(layout.root)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker.start_parent(params=flatten(cfg), tags=tags)
    if tracker.parent_id:
        state.paths[MLFLOW_RUN_KEY] = RUNS_PREFIX + tracker.parent_id
        state.paths[MLFLOW_URI_KEY] = tracker.uri
    return tracker, True


def _log_round(tracker: Any, record: RoundRecord, report: Mapping[str, Any],
               pages: Mapping[str, str] | None = None) -> None:
    """A round's metrics (step = round), report and reliability plot; with ``tracking.log_samples``
    the first sentences of its pseudo-label set (JSON and HTML) and ``pages`` (``{artifact: HTML}``,
    the dev documents tagged by its model): raw text, never otherwise."""
    from cemr.plots import Reliability, reliability_figure

    tracker.log_metrics(round_metrics(record), step=record.round)
    tracker.log_dict(report, f"rounds/round_{record.round:03d}.json")
    cal = record.extra.get("calibration")
    if cal and tracker.enabled:
        fig = reliability_figure(Reliability.from_dict(cal), cal["unit"],
                                 f"Round {record.round} on dev ({cal['method']})")
        tracker.log_plot(fig, f"plots/reliability/round_{record.round:03d}.png", cal)
    if tracker.log_samples and record.pseudo_dir:
        tracker.log_text_samples(pseudo_samples(record.pseudo_dir), f"samples/round_{record.round:03d}.json")
        tracker.log_text_page(pseudo_page(record.pseudo_dir, record.threshold or 0.0,
                                          f"Round {record.round}: kept pseudo-labels (dashed: below the threshold)"),
                              f"samples/round_{record.round:03d}_pseudo.html")
    for name, page in (pages or {}).items():
        tracker.log_text_page(page, name)


def _log_plots(tracker: Any, rounds: Sequence[RoundRecord]) -> None:
    """The run's plots so far: F1 per round and, once a round pseudo-labeled, the pseudo-labels per
    type (each replaces the one logged before)."""
    from cemr.plots import cjk_font, f1_per_round_figure, pseudo_labels_figure, type_labels

    if not tracker.enabled or not rounds:
        return
    f1 = f1_series(rounds)
    tracker.log_plot(f1_per_round_figure(f1["round"], f1["dev_f1"], f1["test_f1"], f1["best_round"]), F1_PLOT, f1)
    pseudo = pseudo_series(rounds)
    if pseudo:
        font = cjk_font()
        fig = pseudo_labels_figure(pseudo["round"], pseudo["kept"], pseudo.get("precision"),
                                   pseudo.get("micro_precision"), font_file=font)
        types = sorted(set(pseudo["kept"]) | set(pseudo.get("precision") or {}))
        tracker.log_plot(fig, PSEUDO_PLOT, {**pseudo, "labels": type_labels(types, font)})


def teacher_thresholds(teacher: RoundRecord, selftrain: Any) -> dict[str, float] | None:
    """The per-type thresholds a round's pseudo-labels use: those fitted on dev for the teacher
    round (``extra["type_thresholds"]``, types not fitted keep ``selftrain.threshold``); None
    without ``selftrain.target_precision``, or when the teacher was evaluated without it (a resume
    that sets it, a run sharing another's round 0): the caller fits them then
    (:meth:`_RoundRunner.fit_thresholds`)."""
    if selftrain.target_precision is None:
        return None
    fitted = (teacher.extra or {}).get("type_thresholds")
    if fitted is None:
        return None
    return thresholds_of(fitted)


def thresholds_of(fitted: list[dict[str, Any]]) -> dict[str, float]:
    """``{type: threshold}`` of fitted type thresholds (``TypeThreshold.to_dict()`` rows); types
    that were not fitted are left out (they keep ``selftrain.threshold``)."""
    return {f["type"]: float(f["threshold"]) for f in fitted if f.get("threshold") is not None}


class _RoundRunner:
    """The per-round work of one run (kept together: config, layout, components, device)."""

    def __init__(self, cfg: Config, layout: RunLayout, components: Any, device: Any, log: Log):
        from cemr.pipeline import load_sentences

        self.cfg, self.layout, self.components, self.device, self.log = cfg, layout, components, device, log
        self.type_share = type_share_of(load_sentences(layout, "train")) if cfg.selftrain.class_balance else None
        self.pool: Any = None  # the pseudo-labeling actors, kept across rounds (cluster.reuse_actors)

    def labeler_pool(self) -> Any:
        """The job's pseudo-labeling actors, started on first use; None with ``cluster.reuse_actors=false``
        (each pass starts its own)."""
        if not self.cfg.cluster.reuse_actors:
            return None
        if self.pool is None:
            from cluster.labeler_pool import LabelerPool
            from cluster.pseudolabel import DEFAULT_PREDICTOR

            self.pool = LabelerPool(self.cfg.cluster, DEFAULT_PREDICTOR, log=self.log)
        return self.pool

    def make_room_for_training(self, r: int) -> None:
        """Stop the kept actors when the round's Ray Train workers would not fit beside them."""
        if self.pool is None:
            return
        c = self.cfg.cluster
        # the workers' CPUs, and at least one whole CPU: the Ray Data read tasks that materialise the
        # round's training rows before the trainer starts (cluster.train) take one each
        cpus, gpus = max(1.0, c.num_workers * c.cpus_per_worker), (c.num_workers if c.use_gpu else 0)
        if not self.pool.fits_beside(cpus, gpus):
            self.log(f"round {r}: stopping the pseudo-labeling actors for training ({cpus:g} CPU, {gpus:g} GPU "
                     f"needed beside them); they start again for the next pass")
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def pseudo_label(self, state: RunState, r: int, type_thresholds: Mapping[str, float] | None = None
                     ) -> tuple[Any, list[str], int]:
        """Label the pool with the best model so far (``type_thresholds``: its per-type thresholds,
        :func:`teacher_thresholds`); returns ``(result, training dirs, rows)``."""
        from cluster.pseudolabel import pseudo_label

        best = best_round(state.rounds)
        if not best.model_dir:
            raise BootstrapError(f"round {best.round} has no model directory in state.json")
        res = pseudo_label(self.layout.split("unlabeled"), best.model_dir, self.layout.round_dir(r) / "pseudo",
                           self.cfg.selftrain.threshold, self.cfg.cluster, self.cfg.selftrain, r,
                           type_share=self.type_share, pool=self.labeler_pool(), log_line=self.log,
                           type_thresholds=type_thresholds)
        self.log(f"round {r}: pseudo-labeled {res.input_rows} sentences with round {best.round}'s model: "
                 f"{res.counts}, {res.kept_after_cap} kept after caps ({res.sentences_per_s:.0f} sentences/s)")
        if self.cfg.selftrain.mode == "accumulate":
            dirs = [rec.pseudo_dir for rec in state.rounds if rec.pseudo_dir] + [res.kept_dir]
            merged = self.layout.round_dir(r) / "pseudo_train"
            rows = merge_pseudo_dirs(dirs, merged, self.cfg.cluster.rows_per_shard)
            return res, [str(merged)], rows
        return res, [res.kept_dir], res.kept_after_cap

    def evaluate(self, model_dir: str | os.PathLike, r: int) -> tuple[dict[str, Any], dict[str, str]]:
        """Dev and test of a round's model: the documents tagged whole, every gold span scored
        (:func:`cemr.pipeline.evaluate_splits`, the path of ``cemr evaluate``), and the calibration
        of its dev confidences (``"calibration"``: :func:`cluster.round_metrics.calibration`, one
        more pass over dev). With ``tracking.log_samples`` also ``{artifact: HTML}`` of the first
        dev documents tagged by it."""
        from cemr.pipeline import evaluate_splits, load_documents
        from cemr.predictor import Predictor
        from cemr.selection import policy_from_config

        predictor = Predictor.load(model_dir, self.device, confidence=self.cfg.selftrain.confidence)
        bs = self.cfg.train.eval_batch_size
        out = evaluate_splits(predictor, self.layout, bs)
        pages: dict[str, str] = {}
        dev = load_documents(self.layout, "dev")
        if dev:
            policy = policy_from_config(self.cfg.selftrain)
            pairs = list(predictor.predict_document_sentences(dev, batch_size=bs))
            gold = {d.id: d.spans for d in dev}
            out["calibration"] = calibration(pairs, gold, policy)
            if self.cfg.selftrain.target_precision is not None:
                out["type_thresholds"] = self._fit(pairs, gold, f"round {r}")
            if self.cfg.tracking.log_samples:
                from cemr.review.html import render_html

                docs = dev[:SAMPLE_DOCUMENTS]
                preds = predictor.predict_documents(docs, batch_size=bs)
                pages[f"samples/round_{r:03d}_dev.html"] = render_html(
                    [(d, preds[d.id]) for d in docs], predictor.labels.types, low_confidence=policy.threshold,
                    title=f"Round {r}: dev documents tagged by its model (dashed: below selftrain.threshold)")
        return out, pages

    def _fit(self, pairs: list[Any], gold: Mapping[str, Any], who: str) -> list[dict[str, Any]]:
        """Per-type thresholds for ``selftrain.target_precision`` from a model's dev predictions
        (``pairs``) against dev gold, logged; as ``TypeThreshold.to_dict()`` rows."""
        from cemr.selection import fit_type_thresholds
        from cluster.round_metrics import entity_items

        target = self.cfg.selftrain.target_precision
        fitted = fit_type_thresholds(*entity_items(pairs, gold), target)
        self.log(f"{who}: per-type thresholds for precision {target:g} on dev: "
                 + ", ".join(f"{f.type} {'-' if f.threshold is None else f'{f.threshold:.3f}'}" for f in fitted))
        return [f.to_dict() for f in fitted]

    def fit_thresholds(self, teacher: RoundRecord) -> list[dict[str, Any]]:
        """The teacher's per-type thresholds fitted now, on dev, when its round was evaluated without
        ``selftrain.target_precision`` (resumed with it set, or round 0 shared from another run):
        otherwise its labels would silently use the single threshold."""
        from cemr.pipeline import load_documents
        from cemr.predictor import Predictor

        dev = load_documents(self.layout, "dev")
        if not dev:
            raise BootstrapError("selftrain.target_precision fits per-type thresholds on dev, and this run has no "
                                 "dev documents")
        self.log(f"round {teacher.round} was evaluated without selftrain.target_precision: fitting its per-type "
                 "thresholds on dev now")
        predictor = Predictor.load(teacher.model_dir, self.device, confidence=self.cfg.selftrain.confidence)
        pairs = list(predictor.predict_document_sentences(dev, batch_size=self.cfg.train.eval_batch_size))
        return self._fit(pairs, {d.id: d.spans for d in dev}, f"round {teacher.round} (teacher)")

    def run(self, state: RunState, r: int) -> tuple[RoundRecord, dict[str, Any], dict[str, str]]:
        """Round ``r``: (pseudo-label,) train, evaluate, score pseudo-labels. Returns the record,
        the round report and the raw-text pages of :meth:`evaluate`."""
        from cluster.train import train_round

        t_round = time.perf_counter()
        times: dict[str, float] = {}
        train_dirs = [str(self.layout.split("train"))]
        weights = [1.0]
        pseudo, pseudo_rows, pseudo_prf, proposed, per_type = None, 0, None, None, None
        threshold, type_thresholds, teacher_fitted = None, None, None
        if r > 0:
            threshold = float(self.cfg.selftrain.threshold)
            teacher = best_round(state.rounds)
            type_thresholds = teacher_thresholds(teacher, self.cfg.selftrain)
            if self.cfg.selftrain.target_precision is not None and type_thresholds is None:
                teacher_fitted = self.fit_thresholds(teacher)
                type_thresholds = thresholds_of(teacher_fitted)
            t0 = time.perf_counter()
            pseudo, dirs, pseudo_rows = self.pseudo_label(state, r, type_thresholds)
            times["pseudo_label"] = time.perf_counter() - t0
            if pseudo.counts.get(KEPT, 0) == 0:
                self.log(f"round {r}: no sentence reached threshold {threshold}: training on gold only")
            train_dirs += dirs
            weights += [float(self.cfg.selftrain.pseudo_weight)] * len(dirs)
            proposed = entity_counts(pseudo.all_dir, KEPT)  # before the caps
            pseudo_prf = score_against_heldout(pseudo.kept_dir, self.layout.split("heldout"))
            per_type = pseudo_prf.pop("per_type") if pseudo_prf else None
        init_model = None
        if r > 0 and self.cfg.selftrain.warm_start:
            init_model = best_round(state.rounds).model_dir  # the model that pseudo-labeled this round
        self.make_room_for_training(r)
        t0 = time.perf_counter()
        trained = train_round(self.cfg, self.layout, train_dirs, r, weights=weights, components=self.components,
                              init_model=init_model, log=self.log)
        times["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        evals, pages = self.evaluate(trained.model_dir, r)
        times["evaluate"] = time.perf_counter() - t0
        dev_micro = (evals.get("dev") or {}).get("micro", {})
        record = RoundRecord(
            round=r,
            dev_f1=float(dev_micro.get("f1", 0.0)),
            dev_precision=float(dev_micro.get("precision", 0.0)),
            dev_recall=float(dev_micro.get("recall", 0.0)),
            threshold=threshold,
            train_sentences=trained.train_rows,
            pseudo_sentences=int(pseudo_rows),
            pseudo_counts=dict(pseudo.counts) if pseudo else {},
            pseudo_entities=dict(pseudo.entities_kept) if pseudo else {},
            pseudo_prf=pseudo_prf,
            model_dir=str(trained.model_dir),
            pseudo_dir=pseudo.kept_dir if pseudo else None,
            seconds=time.perf_counter() - t_round,
            extra={
                "dev": evals.get("dev"),
                "test": evals.get("test"),
                "times": times,
                "pseudo": pseudo.to_dict() if pseudo else None,
                "pseudo_metrics": pseudo.metrics(proposed, pseudo_prf, per_type) if pseudo else {},
                "pseudo_gold_per_type": per_type,
                "calibration": evals.get("calibration"),
                "type_thresholds": evals.get("type_thresholds"),  # fitted on dev: what its pseudo-labels use
                "pseudo_type_thresholds": type_thresholds,  # the teacher's, applied in this round's labels
                # fitted for this round because the teacher's round was evaluated without target_precision
                "teacher_type_thresholds": teacher_fitted,
                "train": {"best_epoch": trained.best_epoch, "epochs_run": len(trained.history),
                          "train_rows": trained.train_rows, "resumed_from_epoch": trained.resumed_from_epoch,
                          "stop_reason": trained.stop_reason, "best_dev_f1_in_training": trained.best_dev_f1,
                          "train_dirs": train_dirs, "weights": weights, "init_model": trained.init_model,
                          "cpu_fallback": bool(getattr(trained, "cpu_fallback", False))},
            },
        )
        report = {"round": record.to_dict(), "history": trained.history}
        return record, report, pages


def _finish_summary(state: RunState, layout: RunLayout, resumed_from: int | None,
                    rounds_run: list[int], started: float, model_uri: str | None) -> BootstrapSummary:
    best = state.best
    run_id = state.paths.get(MLFLOW_RUN_KEY, "")
    return BootstrapSummary(
        run_dir=str(layout.root),
        rounds=[{"round": r.round, "dev_f1": r.dev_f1, "test_f1": round_test_f1(r),
                 "threshold": r.threshold, "pseudo_sentences": r.pseudo_sentences, "pseudo_prf": r.pseudo_prf,
                 "model_dir": r.model_dir} for r in state.rounds],
        best_round=best.round if best else None,
        best_dev_f1=best.dev_f1 if best else 0.0,
        best_test_f1=round_test_f1(best) if best else None,
        best_test=(best.extra.get("test") if best else None),
        best_model_dir=best.model_dir if best else None,
        stop_reason=state.stop_reason,
        mlflow_run_id=run_id[len(RUNS_PREFIX):] if run_id.startswith(RUNS_PREFIX) else None,
        tracking_uri=state.paths.get(MLFLOW_URI_KEY),
        model_uri=model_uri,
        resumed_from_round=resumed_from,
        rounds_run=rounds_run,
        seconds=time.perf_counter() - started,
    )


def _initial_state(cfg: Config, layout: RunLayout, resume: bool, log: Log
                   ) -> tuple[RunState, int | None, dict[str, tuple[Any, Any]]]:
    """``(state, round resumed from or None, changed keys {key: (old, new)})``."""
    state_path = layout.root / "state.json"
    state = load_state(layout.root)
    if state is not None and not resume:
        raise BootstrapError(f"{state_path}: this run directory already holds a run; pass --resume to continue "
                             "it or choose another run_dir")
    if state is None:
        stale = layout.root / "ray_train"
        if stale.exists() and not resume:
            raise BootstrapError(f"{stale}: Ray Train runs without a state.json; remove them or pass --resume")
        if resume:
            log(f"resume: no {state_path} yet: starting a new run")
        return RunState(config=flatten(cfg)), None, {}
    changed = check_resume_config(state.config, flatten(cfg), state_path, selftrain_started(state, layout))
    if changed:
        log("resume: config changed since the run started (allowed): "
            + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))
    state.config = flatten(cfg)
    for rec in state.rounds:
        if not rec.model_dir or not Path(rec.model_dir).is_dir():
            raise BootstrapError(f"{state_path}: round {rec.round}'s model directory {rec.model_dir} is missing")
    log(f"resume: {len(state.rounds)} completed round(s) in {state_path}; next round {state.next_round}")
    return state, state.next_round, changed


def run_bootstrap(cfg: Config, resume: bool = False, log: Log = say, *, parent_run_id: str | None = None,
                  kind: str = "bootstrap") -> BootstrapSummary:
    """Run (or continue, ``resume=True``) the bootstrap of ``cfg.run_dir``; see the module docstring.

    ``parent_run_id``: nest this run's MLflow run under that one (the threshold sweep); ``kind``:
    the ``cemr.kind`` tag. Returns the :class:`BootstrapSummary` (also ``summary.json``).
    """
    from cemr.pipeline import build_components
    from cluster.runtime import shutdown_if_owned

    started = time.perf_counter()
    layout = RunLayout.of(cfg.run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    state, resumed_from, changed = _initial_state(cfg, layout, resume, log)
    decision = should_stop(state.rounds, cfg.selftrain.patience, cfg.selftrain.max_rounds)
    if state.finished and decision:
        log(f"nothing to do: the run had finished ({state.stop_reason}) and {decision.reason}")
        return _finish_summary(state, layout, resumed_from, [], started, None)
    stages_done(cfg, layout)  # a stage made from another config stops the run before Ray starts

    ctx = connect(cfg, log)
    tracker = None
    closers: list[Any] = []
    status = "FAILED"
    rounds_run: list[int] = []
    try:
        tracker, new_run = _open_tracker(cfg, layout, state, parent_run_id, kind, log)
        state.paths.update({"run_dir": str(layout.root), "data": str(layout.data), "pretrain": str(layout.pretrain),
                            "components": str(layout.components), "ray_train": str(layout.root / "ray_train")})
        state.finished, state.stop_reason = False, None
        save_state(layout.root, state)
        if new_run:
            for rec in state.rounds:  # rounds done before this MLflow run existed (a seeded sweep member)
                _log_round(tracker, rec, {"round": rec.to_dict()})
            _log_plots(tracker, state.rounds)
        elif resumed_from is not None:  # the run's params are the first start's: say what runs now
            tracker.record_resume(changed, resumed_from, flatten(cfg))

        stages = run_stages(cfg, layout, log)
        if not stages.get("skipped"):
            tracker.log_metrics(stage_metrics(stages), step=0)
        device = _driver_device(cfg, log)
        components = build_components(cfg, layout, "cpu", log=log)
        runner = _RoundRunner(cfg, layout, components, device, log)
        closers.append(runner.close)

        while not (decision := should_stop(state.rounds, cfg.selftrain.patience, cfg.selftrain.max_rounds)):
            r = state.next_round
            log(f"round {r}: start ({decision.reason})")
            record, report, pages = runner.run(state, r)
            state.add_round(record)
            save_state(layout.root, state)
            atomic_write_text(layout.round_dir(r) / "report.json",
                              json.dumps(report, ensure_ascii=False, indent=1, default=str))
            _log_round(tracker, record, report, pages)
            _log_plots(tracker, state.rounds)
            rounds_run.append(r)
            log(f"round {r}: dev F1 {record.dev_f1:.4f} ({record.seconds:.0f}s)")

        # the run is marked finished only once the end bookkeeping is done: a job killed during it
        # is resumed into it again
        state.stop_reason = decision.reason
        log(f"stop: {decision.reason}; best round {state.best.round} (dev F1 {state.best.dev_f1:.4f})")
        _log_plots(tracker, state.rounds)
        model_uri = tracker.log_model_dir(state.best.model_dir, cfg.tracking.register_model)
        summary = _finish_summary(state, layout, resumed_from, rounds_run, started, model_uri)
        atomic_write_text(layout.root / "summary.json",
                          json.dumps(summary.to_dict(), ensure_ascii=False, indent=1, default=str))
        tracker.log_metrics(final_metrics(state.best), step=state.best.round)
        tracker.log_dict(summary.to_dict(), "summary.json")
        tracker.set_tags({"cemr.stop_reason": decision.reason, "cemr.best_round": state.best.round})
        state.finished = True
        save_state(layout.root, state)
        status = "FINISHED"
        return summary
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except Exception as exc:  # the run fails loudly (exit status 1); MLflow says why
        if tracker is not None:
            tracker.set_tags(failure_tags(exc))
        raise
    finally:
        for close in closers:
            close()
        if tracker is not None:
            tracker.end(status)
        shutdown_if_owned(ctx)


def failure_tags(exc: BaseException) -> dict[str, str]:
    """MLflow tags of a failed run: the error, and for the failures that carry them (GPUs that did
    not come, too many failed pseudo-label rows) their counts and first errors."""
    tags = {"cemr.error": f"{type(exc).__name__}: {exc}"[:4000]}
    for attr in ("needed", "present", "counts", "first_errors", "failures"):
        value = getattr(exc, attr, None)
        if value:
            tags[f"cemr.error.{attr}"] = json.dumps(value, ensure_ascii=False, default=str)[:4000]
    return tags
