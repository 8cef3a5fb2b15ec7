"""cemr.lexicon.folds: out-of-fold lexicons for training documents."""
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cemr.config import LexiconConfig, LexiconSource
from cemr.corpus.document import CorpusError, Document, Span
from cemr.lexicon import FoldedLexicon, Lexicon, bmm_tags, build_folded_lexicon, build_lexicon, doc_fold

ROOT = Path(__file__).resolve().parents[2]


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


def test_folded_full_equals_build_lexicon(write):
    p = write("s.txt", "咳嗽\n头痛\n")
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
