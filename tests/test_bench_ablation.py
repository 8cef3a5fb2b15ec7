"""benchmarks/ablation.py: taking a variant's figures from a finished run only when its config matches."""
import importlib.util
import json
from pathlib import Path

import pytest

from cemr.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def _ablation():
    spec = importlib.util.spec_from_file_location("bench_ablation", ROOT / "benchmarks" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finished_run(run_dir: Path, overrides: list[str], f1: float = 0.91) -> None:
    run_dir.mkdir(parents=True)
    cfg = load_config(None, overrides + ["run_dir=/somewhere/else"])
    (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    dev = {"micro": {"precision": 0.9, "recall": 0.92, "f1": f1},
           "per_type": {"疾病": {"precision": 0.8, "recall": 0.8, "f1": 0.8}}}
    (run_dir / "train_report.json").write_text(
        json.dumps({"dev": dev, "best_epoch": 3, "epochs_run": 5}, ensure_ascii=False), encoding="utf-8")


def test_reused_variant_reads_a_run_of_exactly_its_config(tmp_path):
    ab = _ablation()
    overrides = ab.variant_overrides("dict")
    _finished_run(tmp_path / "run", overrides, f1=0.876)
    row = ab.reused_variant("dict", load_config(None, overrides), tmp_path / "run")
    assert row["f1"] == 0.876
    assert row["features"] == ["dictionary"]
    assert row["per_type_f1"] == {"疾病": 0.8}
    assert row["seconds"] is None and row["reused_from"] == str(tmp_path / "run")
    assert "reused" in ab.format_table([row])


def test_reused_variant_refuses_a_run_of_another_variant_or_setting(tmp_path):
    ab = _ablation()
    _finished_run(tmp_path / "run", ab.variant_overrides("all"))
    with pytest.raises(ValueError, match="model.bert.enabled"):
        ab.reused_variant("base", load_config(None, ab.variant_overrides("base")), tmp_path / "run")
    with pytest.raises(ValueError, match="train.epochs"):
        ab.reused_variant("all", load_config(None, ab.variant_overrides("all") + ["train.epochs=99"]),
                          tmp_path / "run")


def test_reused_variant_needs_a_finished_run(tmp_path):
    ab = _ablation()
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        ab.reused_variant("all", load_config(None), tmp_path / "run")


def test_from_run_pairs_are_parsed_and_checked(tmp_path):
    ab = _ablation()
    assert ab.parse_from_run([f"all={tmp_path}"]) == {"all": tmp_path.resolve()}
    with pytest.raises(ValueError, match="VARIANT=RUN_DIR"):
        ab.parse_from_run(["all"])
    with pytest.raises(ValueError, match="unknown variant"):
        ab.parse_from_run([f"everything={tmp_path}"])


def test_a_table_of_reused_runs_only_prepares_and_trains_nothing(tmp_path, capsys):
    ab = _ablation()
    cfg_file = ab.config_path("ccks2017")
    args = ["--dataset", "ccks2017", "--variants", "base,all", "--out", str(tmp_path / "out")]
    for v, f1 in (("base", 0.90), ("all", 0.93)):
        run = tmp_path / v
        run.mkdir()
        (run / "config.yaml").write_text(dump_config(load_config(cfg_file, ab.variant_overrides(v))), encoding="utf-8")
        (run / "train_report.json").write_text(json.dumps(
            {"dev": {"micro": {"precision": f1, "recall": f1, "f1": f1}, "per_type": {}},
             "best_epoch": 1, "epochs_run": 2}), encoding="utf-8")
        args += ["--from-run", f"{v}={run}"]
    assert ab.main(args) == 0
    assert not (tmp_path / "out" / "shared").exists()  # no prepare / pretraining for a table of finished runs
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["f1"] for r in result["variants"]] == [0.90, 0.93]
