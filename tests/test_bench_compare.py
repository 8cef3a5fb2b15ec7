"""benchmarks/bench_compare.py: paired per-seed differences of two bench_seeds runs."""
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_compare", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compare.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _report(run: Path, seed: int, dev: float, test: float, gold=(100, 90)):
    d = run / f"seed{seed}"
    d.mkdir(parents=True)
    part = lambda f, g: {"micro": {"f1": f, "tp": g - 10, "fn": 10, "fp": 5}}  # noqa: E731
    (d / "train_report.json").write_text(json.dumps({"dev": part(dev, gold[0]), "test": part(test, gold[1])}))


def test_paired_differences_and_the_dev_verdict(tmp_path, capsys):
    base, lever = tmp_path / "base", tmp_path / "lever"
    for s, (bd, bt, ld, lt) in {1: (0.80, 0.79, 0.81, 0.80), 2: (0.82, 0.80, 0.82, 0.83), 3: (0.81, 0.78, 0.80, 0.80)}.items():
        _report(base, s, bd, bt)
        _report(lever, s, ld, lt)
    assert bench.main(["--base", str(base), "--lever", str(lever)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [round(r["test_diff"], 4) for r in out["per_seed"]] == [0.01, 0.03, 0.02]
    assert out["test_diff"]["mean"] == pytest.approx(0.02) and out["test_diff"]["std"] == pytest.approx(0.01)
    assert out["dev_diff"]["mean"] == pytest.approx(0.0) and out["dev_picks_lever"] is False


def test_refuses_different_splits_and_missing_seeds(tmp_path):
    base, lever = tmp_path / "base", tmp_path / "lever"
    _report(base, 1, 0.8, 0.8)
    _report(lever, 1, 0.8, 0.8, gold=(100, 91))
    with pytest.raises(SystemExit, match="test gold mentions differ"):
        bench.main(["--base", str(base), "--lever", str(lever), "--seeds", "1"])
    same = tmp_path / "same"
    _report(same, 1, 0.8, 0.8)
    with pytest.raises(SystemExit, match="seed2.*missing"):
        bench.main(["--base", str(base), "--lever", str(same), "--seeds", "1", "2"])
