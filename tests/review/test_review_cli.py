"""The commands: cemr predict --out-format html, cemr review export / import (exit status 2 and one
line for bad input)."""
from __future__ import annotations

import json
import re

import pytest
from review_fixtures import write_round
from tagger_fakes import tiny_documents, tiny_model_dir

from cemr.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("".join(d.text + "\n" for d in tiny_documents(6)), encoding="utf-8")
    return path


def test_predict_html_marks_every_predicted_entity(model_dir, notes, tmp_path):
    assert main(["predict", "--model", str(model_dir), str(notes), "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert main(["predict", "--model", str(model_dir), str(notes), "--out", str(tmp_path / "p.html"),
                 "--out-format", "html", "--low-confidence", "0.9"]) == 0
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    marks = re.findall(r'<mark class="ent t\d+( low)?" data-type="[^"]+" data-conf="([\d.]+)"', page)
    ents = [e for r in rows for e in r["entities"]]
    assert ents and len(marks) == len(ents)
    assert [bool(low) for low, _ in marks] == [e["confidence"] < 0.9 for e in ents]
    assert page.count('<section class="doc"') == len(rows)


def test_review_export_from_a_predict_output_and_import_back(model_dir, notes, tmp_path, capsys):
    pred = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(model_dir), str(notes), "--out", str(pred)]) == 0
    capsys.readouterr()
    tasks = tmp_path / "tasks.json"
    assert main(["review", "export", "--predictions", str(pred), "--threshold", "1.0", "--out", str(tasks),
                 "--limit", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks"] == len(json.loads(tasks.read_text(encoding="utf-8"))) <= 3
    assert (tmp_path / "tasks.label_config.xml").exists()
    # every task accepted as predicted, as Label Studio exports it
    export = [{"id": k, "data": t["data"], "annotations": [{"id": k, "completed_by": 1, "result": t["predictions"][0]["result"]}]}
              for k, t in enumerate(json.loads(tasks.read_text(encoding="utf-8")), 1)]
    (tmp_path / "export.json").write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    assert main(["review", "import", "--format", "labelstudio", str(tmp_path / "export.json"),
                 "--out", str(tmp_path / "gold.jsonl")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == summary["tasks"]
    assert main(["stats", "--format", "jsonl", str(tmp_path / "gold.jsonl")]) == 0


def test_review_export_of_a_round_without_predictions_needs_the_model(model_dir, tmp_path, capsys):
    rows = [{"doc_id": "a", "sent_id": k, "text": d.text, "status": "below_threshold", "confidence": 0.1 * k}
            for k, d in enumerate(tiny_documents(4))]
    write_round(tmp_path / "round_002", rows)
    out = tmp_path / "tasks.jsonl"
    assert main(["review", "export", "--round-dir", str(tmp_path / "round_002"), "--out", str(out),
                 "--format", "doccano"]) == 2
    assert "pass --model" in capsys.readouterr().err and not out.exists()
    assert main(["review", "export", "--round-dir", str(tmp_path / "round_002"), "--out", str(out),
                 "--format", "doccano", "--model", str(model_dir)]) == 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["cemr"]["task"] for x in lines] == ["a#0", "a#1", "a#2", "a#3"]
    assert main(["review", "export", "--round-dir", str(tmp_path / "round_002"), "--out", str(out),
                 "--format", "doccano", "--model", str(model_dir)]) == 2  # exists: --overwrite


def test_review_import_of_a_bad_file_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "export.json"
    bad.write_text('{"not": "a list"}', encoding="utf-8")
    assert main(["review", "import", "--format", "labelstudio", str(bad), "--out", str(tmp_path / "g.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cemr review: error: ") and "JSON array of tasks" in err
    assert not (tmp_path / "g.jsonl").exists()
