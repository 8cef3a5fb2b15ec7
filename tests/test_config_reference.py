"""docs/config.md is generated from the config tree and must be current."""
from pathlib import Path

from cemr.config import all_keys, config_reference, main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOC.is_file(), "docs/config.md is missing: python -m cemr.config --reference > docs/config.md"
    assert DOC.read_text(encoding="utf-8") == config_reference(), (
        "docs/config.md is stale: python -m cemr.config --reference > docs/config.md")


def test_the_reference_has_a_row_for_every_key_with_its_default_and_rule():
    text = config_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert sorted(rows) == sorted(all_keys())
    assert rows["train.epochs"] == "| `train.epochs` | int | `20` | >= 1 | Training epochs (at most; see patience) |"
    assert "one of entity_min_marginal, entity_mean_marginal, sequence_prob" in rows["selftrain.confidence"]
    assert "| str or null | `null` | one of ccks2017" in rows["lexicon.preset"]
    assert "model.bert.hidden_size is a multiple of model.bert.heads" in text


def test_the_module_prints_the_reference(capsys):
    assert main(["--reference"]) == 0
    assert capsys.readouterr().out == config_reference()
