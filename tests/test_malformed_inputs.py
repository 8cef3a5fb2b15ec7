"""A malformed corpus of every format (the hand-made files of tests/corpus/data plus generated ones)
through ``cemr stats``, ``evaluate``, ``predict`` and ``prepare``: never a traceback, exit status 0
(every record accounted for: read = kept + rejected) or 2 (one line naming the problem)."""
import json
import random
from pathlib import Path

import pytest

from cemr.cli import main
from tagger_fakes import tiny_model_dir

HAND_MADE = Path(__file__).parent / "corpus" / "data"


def _generated(root: Path) -> dict[str, Path]:
    out = {}
    rng = random.Random(0)
    (root / "binary.bin").write_bytes(bytes(rng.randrange(256) for _ in range(8192)))
    out["binary"] = root / "binary.bin"
    (root / "utf16.txt").write_bytes("患者有糖尿病。\n今日复查肺炎好转。\n".encode("utf-16"))
    out["utf16"] = root / "utf16.txt"
    (root / "empty.txt").write_text("", encoding="utf-8")
    out["empty"] = root / "empty.txt"
    (root / "broken.jsonl").write_text(
        '{"id": "a", "text": "患者头痛", "entities": [{"start": 2, "end": 4, "type": "DIS"}]}\n'
        '{"id": "b", "text": "发热", "entities": [{"start": 0, "end": 9, "type": "DIS"}]}\n'
        "{not json\n"
        '{"id": "a", "text": "重复", "entities": []}\n', encoding="utf-8")
    out["broken_jsonl"] = root / "broken.jsonl"
    (root / "array.jsonl").write_text(json.dumps([{"id": "x", "text": "患者", "entities": []}]), encoding="utf-8")
    out["array_as_jsonl"] = root / "array.jsonl"
    (root / "gbk.txt").write_bytes("患者有糖尿病\n".encode("gb18030"))
    out["gb18030"] = root / "gbk.txt"
    empty_dir = root / "empty_dir"
    empty_dir.mkdir()
    out["empty_dir"] = empty_dir
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    cases = {p.name: p for p in sorted(HAND_MADE.iterdir())}
    cases.update(_generated(root))
    assert len(cases) >= 14
    return cases


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])  # a traceback would raise out of main and fail the test
    out = capsys.readouterr()
    assert code in (0, 2), (argv, code, out.err)
    if code == 2:
        lines = [line for line in out.err.splitlines() if line.startswith("cemr ")]
        assert len(lines) == 1 and ": error: " in lines[0], out.err
    return code, out.out, out.err


def _accounted(acc):
    assert acc["read"] == acc["kept"] + acc["rejected"], acc
    assert sum(acc["reasons"].values()) >= acc["rejected"], acc


def test_stats_on_every_malformed_corpus(corpora, capsys):
    codes = {}
    for name, path in corpora.items():
        code, out, err = _run(capsys, "stats", path, "--json")
        codes[name] = code
        if code == 0:
            stats = json.loads(out)
            _accounted(stats)
            assert stats["documents"] == stats["kept"] > 0
    # what cannot be read at all is an error, never "0 documents"
    assert codes["binary"] == codes["empty_dir"] == codes["empty"] == 2
    assert codes["utf16"] == codes["gb18030"] == codes["jsonl_spans.jsonl"] == 0


def test_predict_on_every_malformed_corpus(corpora, model_dir, tmp_path, capsys):
    for name, path in corpora.items():
        out = tmp_path / f"{name}.pred.jsonl"
        code, _, err = _run(capsys, "predict", "--model", model_dir, path, "--out", out)
        if code == 2:
            assert not out.exists(), name  # nothing half-written
            continue
        summary = json.loads(err.strip().splitlines()[-1])
        (acc,) = summary["inputs"].values()
        _accounted(acc)
        rows = out.read_text(encoding="utf-8").splitlines()
        assert len(rows) == summary["documents"] == acc["kept"] > 0, name
        for row in map(json.loads, rows):
            assert not row["text"].lstrip().startswith(("{", "[")), (name, row["text"][:40])  # never JSON syntax


def test_evaluate_on_every_malformed_corpus(corpora, model_dir, capsys):
    scored = []
    for name, path in corpora.items():
        code, out, err = _run(capsys, "evaluate", "--model", model_dir, "--data", path, "--json",
                              "--max-rejected", "1")
        if code == 0:
            rep = json.loads(out)
            _accounted(rep["data"])
            assert rep["documents"] == rep["data"]["kept"] > 0
            scored.append(name)
        else:
            assert out == ""  # no scores for what could not be read
    # labeled corpora with readable records are scored; plain text never is
    assert {"brat_bad", "ccks2017_bad", "jsonl_spans.jsonl", "yidu_bad.txt"} <= set(scored)
    assert not {"plain.txt", "table.tsv", "utf16", "binary"} & set(scored)


def test_prepare_on_every_malformed_labeled_corpus(corpora, tmp_path, capsys):
    for name in ("brat_bad", "ccks2017_bad", "jsonl_spans.jsonl", "yidu_bad.txt", "broken_jsonl", "plain.txt",
                 "binary", "empty_dir"):
        src = corpora[name]
        out = tmp_path / f"prep_{name}"
        # the default policy (data.max_rejected 0.01): every one of these rejects records, or has no labels
        code, _, err = _run(capsys, "prepare", "--out", out, "data.format=auto", f"data.train={src}",
                            "data.dev_fraction=0.3", "model.bert.enabled=false", "model.bilm.enabled=false")
        assert code == 2, (name, err)
        assert not (out / "fingerprint.json").exists() and not (out / "prepare_report.json").exists()
    # allowed to reject, the readable part is prepared and every record is accounted for
    out = tmp_path / "prep_ok"
    code, report, err = _run(capsys, "prepare", "--out", out, "data.format=auto",
                             f"data.train={corpora['yidu_bad.txt']}", "data.dev_fraction=0",
                             "data.max_rejected=1")
    assert code == 0, err
    rep = json.loads(report)
    (entry,) = [e for e in rep["inputs"] if e.get("role") == "train"]
    _accounted(entry["reader"])
    assert entry["reader"]["rejected"] == 3 and entry["documents"] == entry["reader"]["kept"] == 2, entry
