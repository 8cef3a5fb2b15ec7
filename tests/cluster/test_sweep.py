"""cluster.sweep: thresholds, the members seeded from the shared base, a member's result line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cemr.selftrain import RoundRecord, RunState, load_state, save_state
from cluster.sweep import member_config, member_result, seed_member, thresholds_of

DEMO = Path(__file__).resolve().parents[2] / "ray_configs" / "experiments" / "demo.yaml"


def test_thresholds_are_inclusive_and_checked():
    assert thresholds_of(0.1, 1.0, 0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert thresholds_of(0.6, 0.6, 0.1) == [0.6]
    with pytest.raises(ValueError, match="step must be > 0"):
        thresholds_of(0.1, 0.2, 0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        thresholds_of(0.5, 1.5, 0.5)


def test_seed_member_links_shared_stages_and_starts_after_round_0(tmp_path):
    from cemr.config import load_config
    from cemr.pipeline import RunLayout

    base = RunLayout.of(tmp_path / "sweep" / "base")
    for d in ("data", "pretrain", "components"):
        (base.root / d).mkdir(parents=True)
    base_state = RunState(rounds=[RoundRecord(round=0, dev_f1=0.4, model_dir=str(base.model_dir(0)))])
    cfg = load_config(DEMO, [f"run_dir={tmp_path / 'sweep'}"])
    mcfg = member_config(cfg, tmp_path / "sweep", 0.6, "sqlite:///x.db")
    assert mcfg.selftrain.threshold == 0.6 and mcfg.tracking.register_model is None
    state = seed_member(mcfg, base, base_state)
    root = Path(mcfg.run_dir)
    assert root.name == "threshold_0.60" and (root / "data").resolve() == base.data.resolve()
    assert state.next_round == 1 and load_state(root).rounds[0].model_dir == str(base.model_dir(0))
    state.rounds[0].dev_f1 = 0.9
    save_state(root, state)
    assert seed_member(mcfg, base, base_state).rounds[0].dev_f1 == 0.9  # an existing member is kept


def test_member_result_is_the_dev_selected_round_with_its_test_f1():
    test = {"micro": {"precision": 0.5, "recall": 0.5, "f1": 0.55}}
    state = RunState(rounds=[RoundRecord(0, 0.4, model_dir="m0", extra={"test": {"micro": {"f1": 0.9}}}),
                             RoundRecord(1, 0.6, model_dir="m1", extra={"test": test})],
                     stop_reason="reached max_rounds=1")
    assert member_result(0.3, "run", state) == {
        "threshold": 0.3, "best_round": 1, "best_dev_f1": 0.6, "best_test_f1": 0.55, "model_dir": "m1",
        "run_dir": "run", "stop_reason": "reached max_rounds=1"}
    assert member_result(0.3, "run", RunState(rounds=[RoundRecord(0, 0.4)]))["best_test_f1"] is None


def _tracker(tmp_path, monkeypatch):
    from cemr.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Tracker(experiment="sweep", store_dir=tmp_path)


def test_the_sweep_run_plots_dev_and_test_f1_per_threshold(tmp_path, monkeypatch):
    from cluster.sweep import THRESHOLD_PLOT, threshold_plot

    tracker = _tracker(tmp_path, monkeypatch)
    run_id = tracker.start_parent()
    ordered = [{"threshold": 0.5, "best_round": 1, "best_dev_f1": 0.8, "best_test_f1": 0.78},
               {"threshold": 0.6, "best_round": 2, "best_dev_f1": 0.85, "best_test_f1": None}]
    threshold_plot(tracker, ordered, ordered[1])
    tracker.end()
    client = tracker.client
    assert {f.path for f in client.list_artifacts(run_id, "plots")} == {THRESHOLD_PLOT, "plots/f1_vs_threshold.json"}
    data = json.loads(Path(client.download_artifacts(run_id, "plots/f1_vs_threshold.json", str(tmp_path / "dl")))
                      .read_text(encoding="utf-8"))
    assert data == {"threshold": [0.5, 0.6], "best_round": [1, 2], "dev_f1": [0.8, 0.85], "test_f1": [0.78, None],
                    "best_threshold": 0.6}


def test_a_resumed_sweep_records_what_changed_since_its_params(tmp_path, monkeypatch):
    from cemr.config import flatten, load_config
    from cemr.tracking import NOTE_TAG
    from cluster.sweep import record_sweep_resume

    cfg = load_config(DEMO, [f"run_dir={tmp_path / 'sweep'}"])
    first = {**flatten(cfg), "sweep.thresholds": [0.5, 0.6]}
    tracker = _tracker(tmp_path, monkeypatch)
    run_id = tracker.start_parent(params=first)
    tracker.end()
    tracker.resume_parent(run_id)
    assert record_sweep_resume(tracker, {**first, "cluster.actors": 7, "sweep.thresholds": [0.5, 0.6, 0.7]}) == 1
    tracker.end()
    run = tracker.client.get_run(run_id)
    assert run.data.params["resume_1/cluster.actors"] == "7"
    assert run.data.params["resume_1/sweep.thresholds"] == "[0.5, 0.6, 0.7]"
    assert json.loads(run.data.tags["cemr.resume_changes"]) == {
        "cluster.actors": [str(first["cluster.actors"]), 7], "sweep.thresholds": ["[0.5, 0.6]", [0.5, 0.6, 0.7]]}
    assert "cemr.resumed_from_round" not in run.data.tags and "resume 1: `cluster.actors`" in run.data.tags[NOTE_TAG]


def test_fine_thresholds_get_their_own_directories_and_names():
    from cluster.sweep import member_dir, threshold_label, thresholds_of

    ts = thresholds_of(0.6, 0.62, 0.005)
    assert [threshold_label(t) for t in ts] == ["0.60", "0.605", "0.61", "0.615", "0.62"]
    assert len({member_dir("r", t) for t in ts}) == len(ts)  # no two thresholds share a run directory
    assert threshold_label(0.6) == "0.60" and member_dir("r", 0.3).name == "threshold_0.30"  # as before
    assert threshold_label(0.605) == "0.605"
