"""cemr.lexicon.lexicon: the Lexicon's TSV file and pickling."""
import pickle

import pytest

from cemr.corpus.document import CorpusError
from cemr.lexicon import Lexicon, bmm_tags


def test_save_load_round_trip(tmp_path):
    lex = Lexicon({"胃癌": "疾病和诊断", "CT": "影像检查", "头痛": "症状和体征", "β2微球蛋白": "检验"})
    path = tmp_path / "lex.tsv"
    lex.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# cemr lexicon") and "4 terms" in lines[0]
    body = lines[1:]
    assert body == sorted(body) and all(len(line.split("\t")) == 2 for line in body)
    again = Lexicon.load(path)
    assert again == lex and dict(again.items()) == dict(lex.items())
    assert bmm_tags("胃癌CT", again) == bmm_tags("胃癌CT", lex)


def test_pickle_drops_the_trie_and_rebuilds_it():
    lex = Lexicon({"胃癌": "疾病", "胃癌根治术": "治疗"})
    before = bmm_tags("行胃癌根治术", lex)  # builds the trie
    again = pickle.loads(pickle.dumps(lex))
    assert again._matcher is None and bmm_tags("行胃癌根治术", again) == before


def test_load_errors_and_unwritable_terms(write, tmp_path):
    bad = write("bad.tsv", "# header\n胃癌\t疾病\n头痛\n")
    with pytest.raises(CorpusError) as err:
        Lexicon.load(bad)
    assert err.value.line == 3
    dup = write("dup.tsv", "胃癌\t疾病\n胃癌\t症状\n")
    with pytest.raises(CorpusError, match="duplicate"):
        Lexicon.load(dup)
    with pytest.raises(ValueError, match="TSV"):
        Lexicon({"胃\t癌": "疾病"}).save(tmp_path / "x.tsv")
