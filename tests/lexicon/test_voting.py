"""cemr.lexicon.voting: one type per term from its votes (majority, then the fixed type order)."""
from collections import Counter

from cemr.corpus.document import Document, Span
from cemr.lexicon import LexiconBuilder, TermFilter, resolve_type


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
