"""cemr.lexicon: noise filter, typed votes, TSV persistence, FMM/BMM rules, folds, presets."""
import os
import pickle
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cemr.config import LexiconConfig, LexiconSource, data_dir
from cemr.corpus.document import CorpusError, Document, Span
from cemr.lexicon import (
    PRESETS,
    FoldedLexicon,
    Lexicon,
    LexiconBuilder,
    TermFilter,
    backward_max_match,
    bio_labels,
    bmm,
    bmm_tags,
    build_folded_lexicon,
    builder_from_config,
    build_lexicon,
    doc_fold,
    forward_max_match,
    lexicons_dir,
    read_source,
    resolve_type,
)

ROOT = Path(__file__).resolve().parents[1]


def lex_of(*terms: str, type_: str = "T") -> Lexicon:
    return Lexicon({t: type_ for t in terms})


def words(text, segs):
    return [text[s:e] for s, e in segs]


# ----------------------------------------------------------------------------------------------
# Noise filter and votes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, term, reason",
    [
        ("  头痛\r", "头痛", None),
        ("\ufeff胃癌", "胃癌", None),
        ("\u3000 ", "", "empty"),
        ("CA 19-9", "CA 19-9", "whitespace"),
        ("痛", "痛", "too_short"),
        ("很" * 31, "很" * 31, "too_long"),
        ("没有", "没有", "stopword"),
        ("12.5", "12.5", "digits_punct"),
        ("（）+", "（）+", "digits_punct"),
        ("CT", "CT", None),
        ("β2微球蛋白", "β2微球蛋白", None),
    ],
)
def test_term_filter_reasons(raw, term, reason):
    f = TermFilter(min_length=2, max_length=30, stopwords=frozenset({"没有"}))
    assert f.clean(raw) == (term, reason)


def test_term_filter_refuses_bad_lengths():
    with pytest.raises(ValueError, match="min_length"):
        TermFilter(min_length=3, max_length=2)


def test_resolve_type_majority_then_fixed_order():
    assert resolve_type({"A": 1, "B": 3}) == "B"
    assert resolve_type({"A": 2, "B": 2}, type_order=("B", "A")) == "B"
    assert resolve_type({"A": 2, "B": 2}, type_order=("A", "B")) == "A"
    # unlisted types come after listed ones, then alphabetically
    assert resolve_type({"Z": 1, "Y": 1, "X": 1}, type_order=("Z",)) == "Z"
    assert resolve_type({"Z": 1, "Y": 1}) == "Y"


def test_typed_conflicts_are_resolved_and_counted():
    b = LexiconBuilder(TermFilter(), type_order=("疾病", "症状"))
    b.add_terms({"头痛": "症状", "胃癌": "疾病", "水肿": "症状"}, name="list1")
    b.add_terms({"头痛": "疾病", "胃癌": "症状"}, name="list2")
    b.add_terms({"胃癌": "疾病"}, name="list3")
    lex = b.build()
    assert lex["头痛"] == "疾病"  # 1:1 tie -> earliest in type_order
    assert lex["胃癌"] == "疾病"  # 2:1 majority
    assert lex["水肿"] == "症状"
    assert lex.report.conflicts == 2 and lex.report.ties == 1
    assert {e[0] for e in lex.report.conflict_examples} == {"头痛", "胃癌"}
    assert lex.votes["胃癌"] == Counter({"疾病": 2, "症状": 1})


def test_training_mentions_vote_once_per_mention():
    docs = [
        Document("d1", "右髋部疼痛，右髋部肿胀", [Span(0, 3, "部位"), Span(3, 5, "症状"), Span(6, 9, "部位")]),
        Document("d2", "疼痛", [Span(0, 2, "部位")]),
        Document("d3", "痛", [Span(0, 1, "症状")]),  # too short: rejected, counted
    ]
    b = LexiconBuilder(TermFilter(), type_order=("症状", "部位"))
    rep = b.add_mentions(docs)
    lex = b.build()
    assert lex.votes["右髋部"] == Counter({"部位": 2})
    assert lex["疼痛"] == "症状"  # 1:1 tie -> order
    assert (rep.read, rep.kept, dict(rep.rejected)) == (5, 4, {"too_short": 1})


# ----------------------------------------------------------------------------------------------
# Reading lists
# ----------------------------------------------------------------------------------------------


def write(path: Path, text: str, encoding="utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_read_csv_list_with_codes(tmp_path):
    p = write(tmp_path / "d.csv", "胃癌,DIS\r\n头痛,SYM\r\n胃癌,DIS\r\n肾脏,ORG\r\n痛,SYM\r\n\r\n维生素C,DRU\r\n头痛,DIS\r\n")
    votes = {}
    rep = read_source(LexiconSource(p, "csv", None, {"DIS": "疾病", "SYM": "症状", "DRU": "药物"}),
                      TermFilter(), votes)
    assert set(votes) == {"胃癌", "头痛", "维生素C"}
    assert votes["维生素C"] == Counter({"药物": 1}) and votes["胃癌"] == Counter({"疾病": 1})
    assert votes["头痛"] == Counter({"症状": 1, "疾病": 1})  # typed two ways by one list: both vote
    assert rep.duplicates == 1
    assert dict(rep.rejected) == {"unmapped_code": 1, "too_short": 1, "empty": 1}
    assert rep.read == 8 == rep.kept + rep.duplicates + sum(rep.rejected.values())


def test_read_lines_list_bom_tab_extra_and_type(tmp_path):
    p = write(tmp_path / "w.txt", "\ufeff高血压\t1200\n糖尿病\n 12 \n冠心 病\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", "疾病"), TermFilter(), votes)
    assert votes == {"高血压": Counter({"疾病": 1}), "糖尿病": Counter({"疾病": 1})}
    assert dict(rep.rejected) == {"digits_punct": 1, "whitespace": 1}


def test_lines_list_with_type_map_reads_the_code_column(tmp_path):
    p = write(tmp_path / "t.tsv", "头痛\tS\n肝脏\tR\n骨折\tX\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", None, {"S": "症状", "R": "部位"}), TermFilter(), votes)
    assert {t: c.most_common(1)[0][0] for t, c in votes.items()} == {"头痛": "症状", "肝脏": "部位"}
    assert rep.rejected == Counter({"unmapped_code": 1})


def test_untyped_list_is_skipped_and_reported(tmp_path):
    p = write(tmp_path / "u.txt", "高血压\t3\n")
    votes = {}
    rep = read_source(LexiconSource(p, "lines", None), TermFilter(), votes)
    assert votes == {} and rep.skipped and rep.read == 0


def test_bad_inputs_name_file_and_line(tmp_path):
    p = write(tmp_path / "bad.csv", "胃癌,DIS\n头痛SYM\n")
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


def test_build_lexicon_from_config_sources_stopwords_and_mentions(tmp_path):
    p = write(tmp_path / "s.txt", "头痛\n检查\n发热\n")
    cfg = LexiconConfig(sources=[LexiconSource(p, "lines", "症状")], stopwords=["检查"], min_length=2)
    docs = [Document("d", "发热伴咳嗽", [Span(0, 2, "体征"), Span(3, 5, "症状")])]
    lex = build_lexicon(cfg, docs)
    assert dict(lex.items()) == {"头痛": "症状", "发热": "体征", "咳嗽": "症状"}  # 1:1 tie -> alphabetical
    cfg.include_train_mentions = False
    assert dict(build_lexicon(cfg, docs).items()) == {"头痛": "症状", "发热": "症状"}


# ----------------------------------------------------------------------------------------------
# Save / load
# ----------------------------------------------------------------------------------------------


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


def test_load_errors_and_unwritable_terms(tmp_path):
    bad = write(tmp_path / "bad.tsv", "# header\n胃癌\t疾病\n头痛\n")
    with pytest.raises(CorpusError) as err:
        Lexicon.load(bad)
    assert err.value.line == 3
    dup = write(tmp_path / "dup.tsv", "胃癌\t疾病\n胃癌\t症状\n")
    with pytest.raises(CorpusError, match="duplicate"):
        Lexicon.load(dup)
    with pytest.raises(ValueError, match="TSV"):
        Lexicon({"胃\t癌": "疾病"}).save(tmp_path / "x.tsv")


# ----------------------------------------------------------------------------------------------
# FMM / BMM
# ----------------------------------------------------------------------------------------------


def test_classic_disagreement_fewer_single_chars_wins():
    # FMM: 研究生/命/起源, BMM: 研究/生命/起源 -> same count, BMM has fewer single chars
    lex = lex_of("研究", "研究生", "生命", "命", "起源")
    text = "研究生命起源"
    assert words(text, forward_max_match(text, lex)) == ["研究生", "命", "起源"]
    assert words(text, backward_max_match(text, lex)) == ["研究", "生命", "起源"]
    assert [text[s.start:s.end] for s in bmm(text, lex)] == ["研究", "生命", "起源"]


def test_classic_full_tie_goes_backward():
    # FMM: 结婚/的/和尚/未/结婚/的, BMM: 结婚/的/和/尚未/结婚/的: 6 segments, 3 singles, 6 matched chars each
    lex = lex_of("结婚", "和尚", "尚未")
    text = "结婚的和尚未结婚的"
    assert words(text, forward_max_match(text, lex)) == ["结婚", "的", "和尚", "未", "结婚", "的"]
    assert words(text, backward_max_match(text, lex)) == ["结婚", "的", "和", "尚未", "结婚", "的"]
    assert [text[s.start:s.end] for s in bmm(text, lex)] == ["结婚", "尚未", "结婚"]


def test_fewer_segments_wins_even_forward():
    # FMM: 胃癌根/治术 (2), BMM: 胃/癌/根治术 (3)
    lex = Lexicon({"胃癌根": "疾病", "治术": "治疗", "根治术": "治疗"})
    text = "胃癌根治术"
    assert words(text, forward_max_match(text, lex)) == ["胃癌根", "治术"]
    assert words(text, backward_max_match(text, lex)) == ["胃", "癌", "根治术"]
    assert bmm(text, lex) == [Span(0, 3, "疾病"), Span(3, 5, "治疗")]


def test_fewer_single_chars_wins_forward():
    # FMM: 左下/肢痛 (2 segments, 0 singles), BMM: 左/下肢痛 (2 segments, 1 single)
    lex = Lexicon({"左下": "部位", "肢痛": "症状", "下肢痛": "症状"})
    text = "左下肢痛"
    assert bmm(text, lex) == [Span(0, 2, "部位"), Span(2, 4, "症状")]


def test_more_matched_chars_wins_forward():
    # FMM: 腹痛/泻 (泻 a one-char term), BMM: 腹/痛泻: same segments and singles, FMM matches 3 chars
    lex = Lexicon({"腹痛": "症状", "痛泻": "症状", "泻": "症状"})
    text = "腹痛泻"
    assert bmm(text, lex) == [Span(0, 2, "症状"), Span(2, 3, "症状")]


def test_no_disagreement_and_longest_match():
    lex = Lexicon({"南京市": "地", "南京": "地", "市长": "人", "长江": "河", "长江大桥": "桥", "大桥": "桥"})
    text = "南京市长江大桥"
    assert forward_max_match(text, lex) == backward_max_match(text, lex) == [(0, 3), (3, 7)]
    assert bmm(text, lex) == [Span(0, 3, "地"), Span(3, 7, "桥")]


def test_each_disagreement_region_is_decided_on_its_own():
    lex = Lexicon({"研究": "A", "研究生": "A", "生命": "B", "命": "B", "左下": "C", "肢痛": "D", "下肢痛": "D"})
    text = "研究生命。左下肢痛"  # region 1 prefers BMM, region 2 prefers FMM
    spans = bmm(text, lex)
    assert [text[s.start:s.end] for s in spans] == ["研究", "生命", "左下", "肢痛"]


def test_spans_are_end_exclusive_and_tags_bio():
    lex = Lexicon({"右髋部": "身体部位", "疼痛": "症状和体征", "CT": "检查和检验"})
    text = "右髋部疼痛，查CT"
    spans = bmm(text, lex)
    assert spans == [Span(0, 3, "身体部位"), Span(3, 5, "症状和体征"), Span(7, 9, "检查和检验")]
    assert [text[s.start:s.end] for s in spans] == ["右髋部", "疼痛", "CT"]
    assert bmm_tags(text, lex) == [
        "B-身体部位", "I-身体部位", "I-身体部位", "B-症状和体征", "I-症状和体征", "O", "O", "B-检查和检验", "I-检查和检验",
    ]
    assert bmm_tags("", lex) == [] and bmm("", lex) == []
    assert bmm_tags("无", lex) == ["O"]
    assert bio_labels(lex.types()) == ["O", "B-检查和检验", "I-检查和检验", "B-症状和体征", "I-症状和体征",
                                      "B-身体部位", "I-身体部位"]


def _naive_fmm(text, terms, max_len):
    out, i = [], 0
    while i < len(text):
        for L in range(min(max_len, len(text) - i), 0, -1):
            if text[i:i + L] in terms:
                out.append((i, i + L))
                i += L
                break
        else:
            out.append((i, i + 1))
            i += 1
    return out


def _naive_bmm(text, terms, max_len):
    out, j = [], len(text)
    while j > 0:
        for L in range(min(max_len, j), 0, -1):
            if text[j - L:j] in terms:
                out.append((j - L, j))
                j -= L
                break
        else:
            out.append((j - 1, j))
            j -= 1
    return out[::-1]


def _naive_choice(text, terms, max_len):
    """The rule applied piece by piece between the boundaries FMM and BMM share."""
    f, b = _naive_fmm(text, terms, max_len), _naive_bmm(text, terms, max_len)
    cuts = sorted(({s for s, _ in f} | {len(text)}) & ({s for s, _ in b} | {len(text)}))

    def key(seg):
        singles = sum(1 for s, e in seg if e - s == 1)
        matched = sum(e - s for s, e in seg if text[s:e] in terms)
        return len(seg), singles, -matched

    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        fp = [(s, e) for s, e in f if lo <= s < hi]
        bp = [(s, e) for s, e in b if lo <= s < hi]
        out += [(s, e) for s, e in (fp if key(fp) < key(bp) else bp) if text[s:e] in terms]
    return out


def test_trie_matching_agrees_with_naive_maximum_matching():
    rng = random.Random(0)
    alphabet = "甲乙丙丁"
    disagreements = forward_won = 0
    for _ in range(500):
        terms = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(3, 14))}
        lex = lex_of(*terms)
        max_len = max(map(len, terms))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        f, b = _naive_fmm(text, terms, max_len), _naive_bmm(text, terms, max_len)
        disagreements += f != b
        chosen = [(s.start, s.end) for s in bmm(text, lex)]
        forward_won += f != b and chosen == [(s, e) for s, e in f if text[s:e] in terms]
        assert forward_max_match(text, lex) == f, (terms, text)
        assert backward_max_match(text, lex) == b, (terms, text)
        assert [(s.start, s.end) for s in bmm(text, lex)] == _naive_choice(text, terms, max_len), (terms, text)
        assert all(s.type == "T" for s in bmm(text, lex))
    assert disagreements > 40 and forward_won > 10  # the cases exercise the choice, both ways


def test_bmm_refuses_other_objects():
    with pytest.raises(TypeError, match="Lexicon"):
        bmm("头痛", {"头痛": "症状"})


# ----------------------------------------------------------------------------------------------
# Folds
# ----------------------------------------------------------------------------------------------


def test_doc_fold_is_stable_across_processes_and_spread():
    ids = [f"病史特点-{i}" for i in range(200)]
    here = [doc_fold(i, 5) for i in ids]
    code = "import sys; from cemr.lexicon import doc_fold; print([doc_fold(f'病史特点-{i}', 5) for i in range(200)])"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert eval(out) == here
    counts = Counter(here)
    assert set(counts) == set(range(5)) and min(counts.values()) >= 20
    assert {doc_fold("x", 1)} == {0}
    with pytest.raises(ValueError):
        doc_fold("x", 0)


def _fold_docs(k):
    """Two docs in different folds, each with a mention only it has, plus a shared one."""
    ids = [f"doc{i}" for i in range(50)]
    a = ids[0]
    b = next(i for i in ids if doc_fold(i, k) != doc_fold(a, k))
    docs = [
        Document(a, "甲状腺结节伴咳嗽", [Span(0, 5, "疾病"), Span(6, 8, "症状")]),
        Document(b, "胆囊结石伴咳嗽", [Span(0, 4, "疾病"), Span(5, 7, "体征")]),
    ]
    return docs, a, b


def test_folds_exclude_own_mentions_but_keep_external_terms():
    docs, a, b = _fold_docs(5)
    base = Lexicon({"胆囊结石": "疾病", "头痛": "症状"})  # external list
    fl = FoldedLexicon(base, docs, 5)
    lex_a, lex_b = fl.for_doc(a), fl.for_doc(b)
    assert "甲状腺结节" not in lex_a and "甲状腺结节" in lex_b  # a's own mention is hidden from a only
    assert "胆囊结石" in lex_a and "胆囊结石" in lex_b  # external term stays even in b's fold
    assert lex_a["咳嗽"] == "体征" and lex_b["咳嗽"] == "症状"  # the other fold's vote decides
    assert bmm_tags("甲状腺结节", lex_a) == ["O"] * 5
    assert bmm_tags("甲状腺结节", lex_b) == ["B-疾病"] + ["I-疾病"] * 4
    assert fl.for_doc("dev-1") is fl.full and "甲状腺结节" in fl.full
    assert fl.fold_of(a) == doc_fold(a, 5) and fl.fold_of("dev-1") is None
    assert lex_a.matcher.index is lex_b.matcher.index is fl.full.matcher.index  # one shared trie


def test_folded_lexicon_survives_pickling():
    docs, a, b = _fold_docs(5)
    fl = pickle.loads(pickle.dumps(FoldedLexicon(Lexicon({"头痛": "症状"}), docs, 5)))
    assert fl.for_doc(a).matcher.index is fl.for_doc(b).matcher.index is fl.full.matcher.index
    assert bmm_tags("甲状腺结节", fl.for_doc(a)) == ["O"] * 5
    assert bmm_tags("甲状腺结节", fl.for_doc(b))[0] == "B-疾病"


def test_folds_off_and_single_fold():
    docs, a, _ = _fold_docs(5)
    base = Lexicon({"头痛": "症状"})
    off = FoldedLexicon(base, docs, 0)
    assert off.for_doc(a) is off.full and "甲状腺结节" in off.for_doc(a)
    one = FoldedLexicon(base, docs, 1)  # every training doc sees the external terms only
    assert dict(one.for_doc(a).items()) == {"头痛": "症状"}


def test_group_puts_sections_of_one_record_in_one_fold():
    docs = [Document(f"{sec}-{r}", "咳嗽", [Span(0, 2, "症状")], meta={"record": str(r)})
            for r in range(30) for sec in ("一般项目", "病史特点")]
    fl = FoldedLexicon(Lexicon({}), docs, 5, group=lambda d: d.meta["record"])
    for r in range(30):
        assert fl.fold_of(f"一般项目-{r}") == fl.fold_of(f"病史特点-{r}") == doc_fold(str(r), 5)


def test_folded_full_equals_build_lexicon(tmp_path):
    p = write(tmp_path / "s.txt", "咳嗽\n头痛\n")
    cfg = LexiconConfig(sources=[LexiconSource(p, "lines", "体征")], folds=3)
    docs, a, b = _fold_docs(3)
    fl = build_folded_lexicon(cfg, docs)
    assert dict(fl.full.items()) == dict(build_lexicon(cfg, docs).items())
    assert fl.full["咳嗽"] == "体征"  # 2 votes (list + doc b) against 1
    assert fl.report.sources[-1].name == "train_mentions" and fl.report.sources[-1].kept == 4
    cfg.include_train_mentions = False
    assert dict(build_folded_lexicon(cfg, docs).for_doc(a).items()) == {"咳嗽": "体征", "头痛": "体征"}


def test_duplicate_doc_ids_in_different_folds_are_refused():
    docs = [Document("same", "咳嗽", [Span(0, 2, "症状")], meta={"g": "1"}),
            Document("same", "咳嗽", [Span(0, 2, "症状")], meta={"g": "2"})]
    g = next(str(i) for i in range(2, 50) if doc_fold(str(i), 5) != doc_fold("1", 5))
    docs[1].meta["g"] = g
    with pytest.raises(CorpusError, match="appears twice"):
        FoldedLexicon(Lexicon({}), docs, 5, group=lambda d: d.meta["g"])


# ----------------------------------------------------------------------------------------------
# Presets on the real shared lists
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ccks2017", "yidu"])
def test_presets_load_the_shared_lexicons(name):
    preset = PRESETS[name]
    for src in preset.resolved_sources(lexicons_dir()):
        assert os.path.isfile(src.path), src.path
    lex = build_lexicon(LexiconConfig(preset=name))
    counts = lex.type_counts()
    assert set(counts) == set(preset.types)
    assert all(counts[t] > 0 for t in preset.types), counts
    assert len(lex) > 20000
    rep = lex.report
    skipped = {s.name for s in rep.sources if s.skipped}
    assert skipped == {f"{name}:THUOCL_medical.txt", f"{name}:dict_medical_source_words.txt"}
    for s in rep.sources:
        assert s.read == s.kept + s.duplicates + sum(s.rejected.values())
    assert {"没有", "不能"} <= builder_from_config(LexiconConfig(preset=name)).term_filter.stopwords  # deny.txt
    if name == "yidu":
        assert lex.get("腹部CT") == "影像检查" and lex.get("血常规") == "实验室检验"
    else:
        assert lex.get("头痛") == "症状和体征" and lex.get("胃癌") == "疾病和诊断"
        tags = bmm_tags("患者头痛，行胃癌根治术", lex)
        assert tags[2:4] == ["B-症状和体征", "I-症状和体征"]


@pytest.mark.slow
def test_all_presets_add_the_fragment_lists():
    small, full = build_lexicon(LexiconConfig(preset="yidu")), build_lexicon(LexiconConfig(preset="yidu_all"))
    assert len(full) > len(small)
    assert set(full.types()) == set(small.types())
    assert os.path.isdir(os.path.join(data_dir(), "lexicons"))


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown lexicon preset 'nope'"):
        build_lexicon(LexiconConfig(preset="nope"))
