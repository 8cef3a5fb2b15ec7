"""benchmarks/bench_seeds.py: the supervised test F1 of a config over seeds, pretraining shared."""
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_seeds", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_seeds.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TINY = ["data.demo_documents=40", "data.demo_unlabeled=40", "data.max_sentence_len=64", "data.test_fraction=0.2",
        "model.word2vec.dim=8", "model.word2vec.epochs=1", "model.char_dim=8", "model.gru_hidden=8",
        "model.attention_heads=2", "model.bilm.enabled=false", "model.bert.enabled=false", "train.epochs=2"]


def test_each_seed_reports_its_test_f1_and_later_seeds_reuse_the_first_pretraining(tmp_path, capsys):
    assert bench.main(["--config", "ray_configs/experiments/demo.yaml", "--seeds", "1", "2", "--out",
                       str(tmp_path), *TINY, "data.labeled_fraction=1.0"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert [r["seed"] for r in result["per_seed"]] == [1, 2] and result["pretrain_seed"] == 1
    assert all(0.0 <= r["test"] <= 1.0 and r["dev"] is not None for r in result["per_seed"])
    assert result["test"]["n"] == 2 and "seed2 starts from seed1's data, pretrain, components" in out.err
    assert "pretrain: " in out.err and out.err.count("already pretrained for this config") == 1  # seed 2 reused it
