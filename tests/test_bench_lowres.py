"""benchmarks/bench_lowres.py: --round0-from shares round 0 only, however far its source ran."""
import importlib.util
from pathlib import Path

import pytest

from cemr.config import flatten, load_config
from cemr.selftrain import RoundRecord, RunState, load_state, save_state

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_lowres", ROOT / "benchmarks" / "bench_lowres.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

CONFIG = ROOT / "ray_configs" / "experiments" / "demo.yaml"
LOW = ["data.labeled_fraction=0.1"]


class _Stop(Exception):
    pass


def _source(tmp_path, *over):
    src = tmp_path / "src"
    cfg = load_config(CONFIG, [*LOW, *over, f"run_dir={src}"])
    for name in ("data", "pretrain", "components"):
        (src / name).mkdir(parents=True)
    rounds = [RoundRecord(round=r, dev_f1=0.5 + r / 10, model_dir=str(src / f"m{r}")) for r in (0, 1, 2)]
    save_state(src, RunState(rounds=rounds, config=flatten(cfg)))
    return src


def test_a_source_that_ran_rounds_shares_only_round_0_and_other_selftrain_settings_are_allowed(tmp_path, monkeypatch):
    src = _source(tmp_path)
    seen = {}

    def fake_bootstrap(cfg, resume, log):
        seen["state"], seen["cfg"] = load_state(cfg.run_dir), cfg
        raise _Stop

    monkeypatch.setattr("cluster.bootstrap.run_bootstrap", fake_bootstrap)
    out = tmp_path / "lever"
    with pytest.raises(_Stop):
        bench.main(["--config", str(CONFIG), "--out", str(out), "--round0-from", str(src), *LOW,
                    "selftrain.warm_start=true", "selftrain.pseudo_weight=0.25"])
    assert [r.round for r in seen["state"].rounds] == [0]  # rounds 1-2 of the source are not shared
    assert seen["cfg"].selftrain.warm_start and (out / "pretrain").is_symlink()


def test_a_source_with_other_data_is_refused(tmp_path):
    src = _source(tmp_path)
    with pytest.raises(Exception, match="data.labeled_fraction"):
        bench.main(["--config", str(CONFIG), "--out", str(tmp_path / "o"), "--round0-from", str(src),
                    "data.labeled_fraction=0.2"])


def test_gains_select_a_self_training_round_on_dev_and_say_when_dev_prefers_round_0():
    rows = [{"round": 0, "dev_f1": 0.86, "test_f1": 0.83}, {"round": 1, "dev_f1": 0.81, "test_f1": 0.79},
            {"round": 2, "dev_f1": 0.84, "test_f1": 0.80}]
    g = bench.gains(rows)
    assert g["best_round"] == 2 and g["gain_best_points"] == -3.0 and g["gain_last_points"] == -3.0
    assert g["dev_prefers_round0"]
    rows[1]["dev_f1"] = 0.87
    g = bench.gains(rows)
    assert g["best_round"] == 1 and g["gain_best_points"] == -4.0 and not g["dev_prefers_round0"]
