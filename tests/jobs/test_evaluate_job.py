"""jobs.evaluate reads a labeled corpus as cemr evaluate does: labels required, rejection policy applied,
refused before anything is tagged (no Ray needed to see it)."""
import json

import pytest

from cemr.config import load_config
from cemr.corpus.document import CorpusError
from jobs.evaluate import evaluate_corpus


def test_raw_text_is_never_scored_as_a_corpus_without_entities(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("患者有糖尿病，服用胰岛素治疗。\n", encoding="utf-8")
    cfg = load_config(None)
    for fmt in ("text", "auto"):
        with pytest.raises(CorpusError, match="no labels|has no labels"):
            evaluate_corpus(tmp_path / "model", cfg, fmt, str(raw))


def test_the_rejection_policy_applies(tmp_path):
    data = tmp_path / "gold.jsonl"
    data.write_text(json.dumps({"id": "a", "text": "患者头痛", "entities": [{"start": 2, "end": 4, "type": "S"}]},
                               ensure_ascii=False) + "\n"
                    + json.dumps({"id": "b", "text": "发热", "spans": []}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    with pytest.raises(CorpusError, match="rejected"):
        evaluate_corpus(tmp_path / "model", load_config(None), "jsonl", str(data))
