"""benchmarks/bench_teacher.py: teachers are named model directories."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_teacher", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_teacher.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_a_teacher_is_a_name_and_model_directories(tmp_path):
    for m in ("a", "b"):
        (tmp_path / m).mkdir()
        (tmp_path / m / "config.json").write_text("{}", encoding="utf-8")
    assert bench.parse_teacher(f"ab={tmp_path / 'a'},{tmp_path / 'b'}") == ("ab", [str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="expected NAME=MODEL_DIR"):
        bench.parse_teacher(str(tmp_path / "a"))
    with pytest.raises(SystemExit, match="not a model directory"):
        bench.parse_teacher(f"x={tmp_path}")
