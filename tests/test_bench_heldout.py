"""benchmarks/bench_heldout.py: the held-out figures are test figures of dev-selected models."""
import importlib.util
from pathlib import Path

import pytest

from cemr.selftrain import RoundRecord, RunState

_spec = importlib.util.spec_from_file_location(
    "bench_heldout", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_heldout.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _rec(r, dev, test):
    return RoundRecord(round=r, dev_f1=dev, dev_precision=dev, dev_recall=dev, threshold=None if r == 0 else 0.7,
                       train_sentences=10, extra={"test": {"micro": {"f1": test}}})


def test_the_self_trained_figure_is_the_test_f1_of_the_round_dev_selects():
    state = RunState(rounds=[_rec(0, 0.80, 0.70), _rec(1, 0.85, 0.74), _rec(2, 0.84, 0.90)])
    row = bench.selected_rounds(state)
    # round 2 has the best test F1 but dev selects round 1: its test figure is reported
    assert row["self_round"] == 1 and row["self_test"] == 0.74 and row["low_test"] == 0.70


def test_gap_recovered_and_spread():
    assert bench.gap_recovered(0.70, 0.76, 0.80) == pytest.approx(0.6)
    assert bench.gap_recovered(0.8, 0.8, 0.8) is None
    rows = [dict(low_test=0.70, self_test=0.76, full_test=0.80, low_dev=0, self_dev=0, full_dev=0,
                 gap_recovered=0.6),
            dict(low_test=0.72, self_test=0.76, full_test=0.82, low_dev=0, self_dev=0, full_dev=0,
                 gap_recovered=0.4)]
    s = bench.summarize(rows)
    assert s["low_test"]["mean"] == pytest.approx(0.71) and s["low_test"]["std"] == pytest.approx(0.0141421, 1e-4)
    assert s["gap_recovered_of_means"] == pytest.approx((0.76 - 0.71) / (0.81 - 0.71))
    assert s["gap_recovered_per_seed"]["mean"] == pytest.approx(0.5)


def test_later_seeds_reuse_the_first_seeds_pretraining_and_only_with_the_shared_pretrain_seed(tmp_path):
    from cemr.config import load_config
    from cemr.fingerprint import StaleStageError
    from cemr.pipeline import RunLayout, prepare_data, pretrain_stage, stages_done

    tiny = ["data.demo_documents=30", "data.demo_unlabeled=40", "data.max_sentence_len=64",
            "model.word2vec.dim=8", "model.word2vec.epochs=1", "model.bilm.enabled=false",
            "model.bert.enabled=false", "model.dictionary.enabled=false"]
    first = load_config(None, [*tiny, "train.seed=1", "train.pretrain_seed=1"])
    layout = RunLayout.of(tmp_path / "seed1_low")
    prepare_data(first, layout, log=lambda m: None)
    pretrain_stage(first, layout, log=lambda m: None)
    assert bench.seed_stages(tmp_path / "seed1_low", tmp_path / "seed2_low") == ["data", "pretrain"]
    assert bench.seed_stages(tmp_path / "seed1_low", tmp_path / "seed2_low") == []  # never over a run
    second = RunLayout.of(tmp_path / "seed2_low")
    assert stages_done(load_config(None, [*tiny, "train.seed=2", "train.pretrain_seed=1"]), second)
    with pytest.raises(StaleStageError, match="train.seed"):
        stages_done(load_config(None, [*tiny, "train.seed=2"]), second)  # its own pretraining seed: not shared


def _seeds_run(root, seed, test_text, f1=0.81):
    import json

    d = root / f"seed{seed}"
    (d / "data" / "documents").mkdir(parents=True)
    (d / "data" / "documents" / "dev.jsonl").write_text('{"id": "d1"}\n', encoding="utf-8")
    (d / "data" / "documents" / "test.jsonl").write_text(test_text, encoding="utf-8")
    (d / "config.yaml").write_text("name: yidu_s4k\n", encoding="utf-8")
    (d / "train_report.json").write_text(json.dumps(
        {"best_epoch": 13, "dev": {"micro": {"f1": 0.82}}, "test": {"micro": {"f1": f1}}}), encoding="utf-8")
    return d


def test_the_full_arm_is_read_from_a_seeds_run_only_on_the_same_split(tmp_path):
    seeds_run, mine = tmp_path / "seeds", tmp_path / "mine"
    _seeds_run(seeds_run, 1, '{"id": "t1"}\n')
    (mine / "data" / "documents").mkdir(parents=True)
    (mine / "data" / "documents" / "dev.jsonl").write_text('{"id": "d1"}\n', encoding="utf-8")
    (mine / "data" / "documents" / "test.jsonl").write_text('{"id": "t1"}\n', encoding="utf-8")
    row = bench.full_from_seeds_run(seeds_run, 1, mine)
    assert row["full_test"] == 0.81 and row["full_dev"] == 0.82 and row["full_config"] == "yidu_s4k"
    # another seed's run is missing: stop, naming the file
    with pytest.raises(SystemExit, match="seed2"):
        bench.full_from_seeds_run(seeds_run, 2, mine)
    # a different test split: stop
    (mine / "data" / "documents" / "test.jsonl").write_text('{"id": "t2"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="not the same test split"):
        bench.full_from_seeds_run(seeds_run, 1, mine)
