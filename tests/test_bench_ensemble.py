"""benchmarks/bench_ensemble.py: only the seeds of one split are ensembled."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_ensemble", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ensemble.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _docs(run, seed, text):
    d = run / f"seed{seed}" / "data" / "documents"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text(text, encoding="utf-8")


def test_the_seeds_must_share_their_documents(tmp_path):
    _docs(tmp_path, 1, '{"id": "a"}\n')
    _docs(tmp_path, 2, '{"id": "a"}\n')
    assert bench.same_documents(tmp_path, [1, 2], "test") == tmp_path / "seed1" / "data" / "documents" / "test.jsonl"
    _docs(tmp_path, 3, '{"id": "b"}\n')
    with pytest.raises(SystemExit, match="documents differ"):
        bench.same_documents(tmp_path, [1, 2, 3], "test")
    with pytest.raises(SystemExit, match="seed4.*does not exist"):
        bench.same_documents(tmp_path, [1, 4], "test")
