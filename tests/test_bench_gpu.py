"""benchmarks/bench_gpu.py: runs on the CPU with tiny sizes, with Ray, MLflow and gensim made
unimportable (the GPU machine it is for has none of them); its bert-base-chinese-shaped vocab."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
BLOCKED = ("ray", "mlflow", "gensim")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runs_on_cpu_tiny_without_ray_mlflow_or_gensim():
    # sys.modules[name] = None makes every `import name` raise ImportError
    code = (
        "import runpy, sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = [{str(BENCH)!r}, '--device', 'cpu', '--tiny', '--threads', '1']\n"
        "try:\n"
        f"    runpy.run_path({str(BENCH)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["bert"]["vocab_size"] == 21128 and result["bert"]["layers"] == 2
    assert set(result["predict"]) == {"fp32", "bf16"}
    assert all(r["sentences_per_s"] > 0 and r["entities"] >= 0 for r in result["predict"].values())
    assert set(result["train"]) == {"frozen_fp32", "frozen_bf16", "finetune_fp32", "finetune_bf16"}
    assert all(r["steps_per_s"] > 0 and r["steps"] == 2 for r in result["train"].values())
    assert result["train"]["finetune_fp32"]["trainable_params"] > result["train"]["frozen_fp32"]["trainable_params"]
    assert 0 < result["bf16_vs_fp32"]["feature_rel_l2_diff"] < 0.05


def test_the_vocab_has_bert_base_chineses_layout_and_size():
    from cemr.features.chartokenizer import CharTokenizer

    bench = _bench()
    tokens = bench.bert_base_vocab(21128, chars="患者")
    assert len(tokens) == len(set(tokens)) == 21128
    assert tokens[0] == "[PAD]" and tokens[1] == "[unused1]" and tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[104:106] == ["患", "者"] and "一" in tokens and "龥" in tokens
    tok = CharTokenizer(tokens)
    assert tok.encode("患者 头痛A") == [104, 105, 1, tokens.index("头"), tokens.index("痛"), tokens.index("A")]
    assert len(bench.bert_base_vocab(200)) == 200
    with pytest.raises(ValueError, match="cannot hold"):
        bench.bert_base_vocab(100)
