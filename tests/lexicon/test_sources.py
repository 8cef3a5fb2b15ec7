"""cemr.lexicon.sources: reading term lists into votes, with every line accounted for."""
from collections import Counter

import pytest

from cemr.config import LexiconSource
from cemr.corpus.document import CorpusError
from cemr.lexicon import TermFilter, read_source


def test_read_csv_list_with_codes(write):
    p = write("d.csv", "胃癌,DIS\r\n头痛,SYM\r\n胃癌,DIS\r\n肾脏,ORG\r\n痛,SYM\r\n\r\n维生素C,DRU\r\n头痛,DIS\r\n")
    votes = {}
    rep = read_source(LexiconSource(p, "csv", None, {"DIS": "疾病", "SYM": "症状", "DRU": "药物"}),
                      TermFilter(), votes)
    assert set(votes) == {"胃癌", "头痛", "维生素C"}
    assert votes["维生素C"] == Counter({"药物": 1}) and votes["胃癌"] == Counter({"疾病": 1})
    assert votes["头痛"] == Counter({"症状": 1, "疾病": 1})  # typed two ways by one list: both vote
    assert rep.duplicates == 1
    assert dict(rep.rejected) == {"unmapped_code": 1, "too_short": 1, "empty": 1}
    assert rep.read == 8 == rep.kept + rep.duplicates + sum(rep.rejected.values())


def test_read_lines_list_bom_tab_extra_and_type(write):
    p = write("w.txt", "\ufeff高血压\t1200\n糖尿病\n 12 \n冠心 病\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", "疾病"), TermFilter(), votes)
    assert votes == {"高血压": Counter({"疾病": 1}), "糖尿病": Counter({"疾病": 1})}
    assert dict(rep.rejected) == {"digits_punct": 1, "whitespace": 1}


def test_lines_list_with_type_map_reads_the_code_column(write):
    p = write("t.tsv", "头痛\tS\n肝脏\tR\n骨折\tX\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", None, {"S": "症状", "R": "部位"}), TermFilter(), votes)
    assert {t: c.most_common(1)[0][0] for t, c in votes.items()} == {"头痛": "症状", "肝脏": "部位"}
    assert rep.rejected == Counter({"unmapped_code": 1})


def test_untyped_list_is_skipped_and_reported(write):
    p = write("u.txt", "高血压\t3\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", None), TermFilter(), votes)
    assert votes == {} and rep.skipped and rep.read == 0


def test_bad_inputs_name_file_and_line(write, tmp_path):
    p = write("bad.csv", "胃癌,DIS\n头痛SYM\n")
    with pytest.raises(CorpusError) as err:
        read_source(LexiconSource(p, "csv", None, {"DIS": "疾病"}), TermFilter(), {})
    assert err.value.path == p and err.value.line == 2 and "term,CODE" in err.value.problem
    g = tmp_path / "gbk.txt"
    g.write_bytes("胃癌\n".encode("utf-8") + "中文\n".encode("gb18030"))
    with pytest.raises(CorpusError) as err:
        read_source(LexiconSource(str(g), "lines", "症状"), TermFilter(), {})
    assert err.value.line == 2 and "UTF-8" in err.value.problem
    with pytest.raises(CorpusError, match="cannot read"):
        read_source(LexiconSource(str(tmp_path / "missing.txt"), "lines", "症状"), TermFilter(), {})
