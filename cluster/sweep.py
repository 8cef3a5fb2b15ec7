"""The confidence-threshold sweep (``jobs.sweep``): one bootstrap run per threshold on a shared base.

Layout under ``run_dir``::

    sweep_state.json        the sweep's MLflow run and the result of every finished threshold
    base/                   the gold-only run (max_rounds 0): data/, pretrain/, components/, round 0
    threshold_<t>/          one bootstrap run (:func:`cluster.bootstrap.run_bootstrap`) per threshold,
                            its stages linked to base/'s and its state seeded with base/'s round 0
    sweep_summary.json      every threshold's best round (dev-selected) and the overall winner

Every run is a nested MLflow run under the sweep run (``sweep/best_dev_f1``, ``sweep/best_test_f1``
at step = threshold x 100); the sweep run gets the F1-per-threshold plot (``plots/f1_vs_threshold.png``:
each threshold's dev-selected round, its dev and test F1, the winner marked; its numbers in the JSON
beside it) and the winner's model (registered as ``tracking.register_model``). ``--resume`` skips
finished thresholds and continues the others; the sweep run records the resume
(:func:`record_sweep_resume`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from cemr.config import Config, flatten
from cemr.outputs import atomic_write_text
from cemr.pipeline import RunLayout
from cemr.progress import say
from cemr.selftrain import RunState, load_state, save_state
from cluster.bootstrap import BootstrapError, Log, connect, run_bootstrap
from cluster.round_metrics import round_test_f1

THRESHOLD_PLOT = "plots/f1_vs_threshold.png"

SWEEP_STATE = "sweep_state.json"
SHARED_DIRS = ("data", "pretrain", "components")


def thresholds_of(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ..., <= stop`` (inclusive, rounded to 6 decimals)."""
    if step <= 0:
        raise ValueError(f"sweep.step must be > 0, got {step}")
    if stop < start:
        raise ValueError(f"sweep.stop {stop} < sweep.start {start}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    out = [round(start + i * step, 6) for i in range(n)]
    bad = [t for t in out if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"thresholds must be in [0, 1], got {bad}")
    return out


def decimals(threshold: float) -> int:
    """Decimals that write ``threshold`` exactly: 2 for a 0.01 grid (``0.60``), more for finer
    steps (``0.605``: 3), at most 6 (:func:`thresholds_of` rounds to 6)."""
    for d in range(2, 7):
        if abs(round(threshold, d) - threshold) < 1e-9:
            return d
    return 6


def threshold_label(threshold: float) -> str:
    """The name of a threshold in directories, run names and results: ``0.60``, ``0.605``."""
    return f"{threshold:.{decimals(threshold)}f}"


def member_dir(root: str | os.PathLike, threshold: float) -> Path:
    return Path(root) / f"threshold_{threshold_label(threshold)}"


def member_config(cfg: Config, root: Path, threshold: float, tracking_uri: str | None) -> Config:
    """The bootstrap config of one threshold: its own run dir, the sweep's MLflow store, nothing
    registered (the sweep registers the overall best)."""
    return dataclasses.replace(
        cfg,
        run_dir=str(member_dir(root, threshold)),
        selftrain=dataclasses.replace(cfg.selftrain, threshold=float(threshold)),
        tracking=dataclasses.replace(cfg.tracking, tracking_uri=tracking_uri, run_name=f"threshold_{threshold_label(threshold)}",
                                     register_model=None),
    )


def seed_member(member_cfg: Config, base: RunLayout, base_state: RunState) -> RunState:
    """Start a sweep member from the shared base: ``data/``, ``pretrain/``, ``components/`` are
    links to the base's, and its state holds the base's round 0 (gold only, the same for every
    threshold), so the member continues with round 1. An existing member state is kept."""
    layout = RunLayout.of(member_cfg.run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    for name in SHARED_DIRS:
        link, target = layout.root / name, base.root / name
        if not link.exists() and target.exists():
            link.symlink_to(target, target_is_directory=True)
    state = load_state(layout.root)
    if state is None:
        state = RunState(rounds=[r for r in base_state.rounds if r.round == 0], config=flatten(member_cfg))
        state.paths["seeded_from"] = str(base.root)
        save_state(layout.root, state)
    return state


def member_result(threshold: float, run_dir: str, state: RunState) -> dict[str, Any]:
    """One threshold's line of the sweep: its dev-selected round, that round's dev and test F1."""
    best = state.best
    return {"threshold": threshold, "best_round": best.round, "best_dev_f1": best.dev_f1,
            "best_test_f1": round_test_f1(best), "model_dir": best.model_dir, "run_dir": run_dir,
            "stop_reason": state.stop_reason}


def record_sweep_resume(tracker: Any, params: dict[str, Any]) -> int | None:
    """Record on the reopened sweep run that it was resumed with ``params`` (the flat config and
    ``sweep.thresholds``): the keys whose value differs from the param the run logged at its start,
    old and new (:meth:`cemr.tracking.Tracker.record_resume`, no round). Returns the resume number."""
    from cemr.tracking import changed_params

    if not tracker.enabled:
        return None
    logged = tracker.client.get_run(tracker.parent_id).data.params
    return tracker.record_resume(changed_params(logged, params), None, params)


def threshold_plot(tracker: Any, ordered: list[dict[str, Any]], winner: dict[str, Any]) -> None:
    """The sweep run's F1-per-threshold plot and its numbers (``ordered``: :func:`member_result`
    lines in threshold order)."""
    from cemr.plots import f1_per_threshold_figure

    if not tracker.enabled:
        return
    data = {"threshold": [r["threshold"] for r in ordered], "best_round": [r["best_round"] for r in ordered],
            "dev_f1": [r["best_dev_f1"] for r in ordered], "test_f1": [r["best_test_f1"] for r in ordered],
            "best_threshold": winner["threshold"]}
    fig = f1_per_threshold_figure(data["threshold"], data["dev_f1"], data["test_f1"], winner["threshold"])
    tracker.log_plot(fig, THRESHOLD_PLOT, data)


def run_sweep(cfg: Config, resume: bool = False, log: Log = say) -> dict[str, Any]:
    """Bootstrap once per threshold ``sweep.start..stop`` (step ``sweep.step``), each a nested MLflow
    run under one sweep run, in ``<run_dir>/threshold_<t>``; round 0 and the stages are shared
    (``<run_dir>/base``). Logs the F1-per-threshold plot and registers the best threshold's model."""
    from cemr.tracking import Tracker
    from cluster.runtime import shutdown_if_owned

    root = RunLayout.of(cfg.run_dir).root
    root.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds_of(cfg.sweep.start, cfg.sweep.stop, cfg.sweep.step)
    state_path = root / SWEEP_STATE
    sweep_state: dict[str, Any] = {}
    if state_path.exists():
        if not resume:
            raise BootstrapError(f"{state_path}: this directory already holds a sweep; pass --resume or choose another run_dir")
        sweep_state = json.loads(state_path.read_text(encoding="utf-8"))
    ctx = connect(cfg, log)
    tracker = Tracker.from_config(cfg.tracking, root)
    status = "FAILED"
    params = {**flatten(cfg), "sweep.thresholds": thresholds}
    try:
        if sweep_state.get("mlflow_run_id"):
            tracker.uri = sweep_state.get("tracking_uri") or tracker.uri
            tracker.resume_parent(sweep_state["mlflow_run_id"])
            record_sweep_resume(tracker, params)
        else:
            tracker.start_parent(params=params,
                                 tags={"cemr.kind": "sweep", "cemr.name": cfg.name, "cemr.run_dir": str(root)})
            sweep_state = {"mlflow_run_id": tracker.parent_id, "tracking_uri": tracker.uri, "results": {}}
            atomic_write_text(state_path, json.dumps(sweep_state, indent=1))
        uri = sweep_state.get("tracking_uri") or tracker.uri
        base_cfg = dataclasses.replace(
            member_config(cfg, root, 0.0, uri), run_dir=str(root / "base"),
            selftrain=dataclasses.replace(cfg.selftrain, max_rounds=0),
            tracking=dataclasses.replace(cfg.tracking, tracking_uri=uri, run_name="gold_only", register_model=None))
        run_bootstrap(base_cfg, resume=True, log=log, parent_run_id=tracker.parent_id, kind="sweep_base")
        base = RunLayout.of(base_cfg.run_dir)
        base_state = load_state(base.root)
        results: dict[str, Any] = dict(sweep_state.get("results", {}))
        grid = max(decimals(t) for t in thresholds)  # the metric step of a threshold: t * 10**grid
        for t in thresholds:
            mcfg = member_config(cfg, root, t, uri)
            seed_member(mcfg, base, base_state)
            log(f"sweep: threshold {threshold_label(t)}")
            summary = run_bootstrap(mcfg, resume=True, log=log, parent_run_id=tracker.parent_id, kind="sweep_member")
            result = member_result(t, summary.run_dir, load_state(summary.run_dir))
            results[threshold_label(t)] = result
            test_f1 = result["best_test_f1"]
            tracker.log_metrics({"sweep/best_dev_f1": result["best_dev_f1"], "sweep/threshold": t,
                                 **({"sweep/best_test_f1": test_f1} if test_f1 is not None else {})},
                                step=int(round(t * 10 ** grid)))  # 0.1 grid: 10, 20, ...
            sweep_state["results"] = results
            atomic_write_text(state_path, json.dumps(sweep_state, indent=1, ensure_ascii=False, default=str))
        ordered = [results[threshold_label(t)] for t in thresholds]
        winner = max(ordered, key=lambda r: (r["best_dev_f1"], -r["threshold"]))
        threshold_plot(tracker, ordered, winner)
        model_uri = tracker.log_model_dir(winner["model_dir"], cfg.tracking.register_model)
        out = {"run_dir": str(root), "thresholds": thresholds, "results": ordered, "best": winner,
               "mlflow_run_id": sweep_state["mlflow_run_id"], "tracking_uri": uri, "model_uri": model_uri}
        tracker.log_dict(out, "sweep_summary.json")
        tracker.set_tags({"cemr.best_threshold": winner["threshold"]})
        atomic_write_text(root / "sweep_summary.json", json.dumps(out, ensure_ascii=False, indent=1, default=str))
        status = "FINISHED"
        return out
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
        shutdown_if_owned(ctx)
