import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemr.corpus.document import Document, Span
from cemr.metrics import PRF, EvalError, display_width, evaluate, match_counts

A, B = "身体部位", "症状和体征"


def test_perfect_prediction():
    gold = {"d1": [Span(0, 2, A), Span(3, 5, B)], "d2": [Span(1, 4, A)]}
    r = evaluate(gold, gold)
    assert r.micro == PRF(1.0, 1.0, 1.0, 3, 0, 0, 3)
    assert r.per_type[A] == PRF(1.0, 1.0, 1.0, 2, 0, 0, 2)
    assert r.documents == 2 and r.entities == 3


def test_hand_computed_scores():
    gold = {"d1": [Span(0, 2, A), Span(3, 5, B), Span(6, 8, B)]}
    pred = {"d1": [Span(0, 2, A), Span(3, 5, A), Span(9, 10, B)]}
    r = evaluate(gold, pred)
    # tp: (0,2,A); fp: (3,5,A), (9,10,B); fn: (3,5,B), (6,8,B)
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (1, 2, 2)
    assert r.micro.precision == pytest.approx(1 / 3)
    assert r.micro.recall == pytest.approx(1 / 3)
    assert r.micro.f1 == pytest.approx(1 / 3)
    assert r.per_type[A] == PRF(0.5, 1.0, pytest.approx(2 / 3), 1, 1, 0, 1)
    assert r.per_type[B] == PRF(0.0, 0.0, 0.0, 0, 1, 2, 2)


def test_empty_predictions():
    gold = {"d1": [Span(0, 2, A)], "d2": [Span(0, 1, B)]}
    for pred in ({}, {"d1": [], "d2": []}, {"d1": []}):
        r = evaluate(gold, pred)
        assert r.micro == PRF(0.0, 0.0, 0.0, 0, 0, 2, 2)
        assert set(r.per_type) == {A, B}


def test_empty_gold():
    r = evaluate({"d1": []}, {"d1": [Span(0, 2, A)]})
    assert r.micro == PRF(0.0, 0.0, 0.0, 0, 1, 0, 0)
    assert r.per_type == {A: PRF(0.0, 0.0, 0.0, 0, 1, 0, 0)}
    assert r.entities == 0 and r.documents == 1


def test_both_empty():
    for gold in ({}, {"d1": []}):
        r = evaluate(gold, {})
        assert r.micro == PRF(0.0, 0.0, 0.0, 0, 0, 0, 0)
        assert r.per_type == {}
        assert r.to_dict()["micro"]["f1"] == 0.0


def test_partial_overlap_is_not_a_match():
    gold = {"d": [Span(2, 6, A)]}
    for wrong in (Span(2, 5, A), Span(3, 6, A), Span(1, 6, A), Span(2, 7, A), Span(3, 5, A)):
        r = evaluate(gold, {"d": [wrong]})
        assert (r.micro.tp, r.micro.fp, r.micro.fn) == (0, 1, 1)


def test_type_mismatch_is_fp_and_fn():
    r = evaluate({"d": [Span(0, 3, A)]}, {"d": [Span(0, 3, B)]})
    assert (r.per_type[A].tp, r.per_type[A].fn, r.per_type[A].fp) == (0, 1, 0)
    assert (r.per_type[B].tp, r.per_type[B].fn, r.per_type[B].fp) == (0, 0, 1)


def test_duplicates_count_as_a_multiset():
    s = Span(0, 3, A)
    r = evaluate({"d": [s]}, {"d": [s, s]})
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (1, 1, 0)
    r = evaluate({"d": [s, s]}, {"d": [s]})
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (1, 0, 1)
    assert r.entities == 2
    assert match_counts([s, s], [s, s]) == {A: (2, 0, 0)}


def test_documents_are_matched_by_id_not_position():
    gold = [Document("a", "xxxx", [Span(0, 2, A)]), Document("b", "yyyy", [Span(1, 3, B)])]
    pred = [Document("b", "yyyy", [Span(1, 3, B)]), Document("a", "xxxx", [Span(0, 2, A)])]
    assert evaluate(gold, pred).micro.f1 == 1.0
    # a span right in the wrong document is wrong
    r = evaluate({"a": [Span(0, 2, A)], "b": []}, {"b": [Span(0, 2, A)]})
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (0, 1, 1)
    # mixing the two input forms works too
    assert evaluate(gold, {"a": [Span(0, 2, A)], "b": [Span(1, 3, B)]}).micro.f1 == 1.0


def test_input_errors_name_the_problem():
    with pytest.raises(EvalError, match="'zz' is not in gold"):
        evaluate({"a": []}, {"a": [], "zz": [Span(0, 1, A)]})
    with pytest.raises(EvalError, match="given twice"):
        evaluate([Document("a", "x"), Document("a", "x")], {})
    with pytest.raises(EvalError, match="not a Span"):
        evaluate({"a": [(0, 1, A)]}, {})
    with pytest.raises(EvalError, match="expected a Document"):
        evaluate(["a"], {})


def test_to_dict_shape_is_json():
    r = evaluate({"d": [Span(0, 2, A)]}, {"d": [Span(0, 2, A), Span(3, 4, B)]})
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {"micro", "per_type", "documents", "entities"}
    keys = {"precision", "recall", "f1", "tp", "fp", "fn"}
    assert set(d["micro"]) == keys
    assert list(d["per_type"]) == sorted([A, B])
    assert all(set(v) == keys for v in d["per_type"].values())
    assert d["micro"]["precision"] == 0.5 and d["documents"] == 1 and d["entities"] == 1


def test_to_table_is_aligned():
    r = evaluate({"d": [Span(0, 2, A), Span(2, 3, "DRUG")]}, {"d": [Span(0, 2, A)]})
    lines = r.to_table().splitlines()
    assert lines[0].split() == ["type", "precision", "recall", "f1", "tp", "fp", "fn", "support"]
    rows = [l for l in lines if l.split() and l.split()[0] in {A, "DRUG", "micro"}]
    assert [l.split()[0] for l in rows] == ["DRUG", A, "micro"]
    # right-aligned numbers end in the same terminal column whatever the width of the type name
    assert len({display_width(l) for l in rows + lines[:1]}) == 1
    assert rows[-1].split()[1:] == ["1.0000", "0.5000", "0.6667", "1", "0", "1", "2"]
    assert "documents: 1" in lines[-1]


def _column_ends(line):
    """The terminal column (wcwidth) where each space-separated cell of ``line`` ends."""
    from wcwidth import wcswidth

    ends, col, inside = [], 0, False
    for ch in line:
        if ch == " ":
            if inside:
                ends.append(col)
            inside = False
        else:
            inside = True
        col += wcswidth(ch) if ch != " " else 1
    if inside:
        ends.append(col)
    return ends


def test_to_table_columns_line_up_in_terminal_columns_for_cjk_and_combining_type_names():
    # wide CJK (2 columns a character), ASCII, full-width parentheses, and a decomposed accent
    # (e + U+0301: 1 column, 2 code points) as type names of very different display widths
    types = ["疾病和诊断", "DRUG", "检查（实验室）", "Te\u0301te"]
    gold = {"d": [Span(i, i + 1, t) for i, t in enumerate(types)] * 3}
    pred = {"d": [Span(0, 1, types[0]), Span(2, 3, types[2])]}
    lines = evaluate(gold, pred).to_table().splitlines()
    table = [l for l in lines[:-1] if not set(l) <= {"-", " "}]  # header, rows, micro
    assert [l.split()[0] for l in table] == ["type", "DRUG", "Te\u0301te", "检查（实验室）", "疾病和诊断", "micro"]
    ends = [_column_ends(l) for l in table]
    assert all(len(e) == 8 for e in ends)
    # the type column and every right-aligned number column end in the same terminal column on every row
    for c in range(1, 8):
        assert len({e[c] for e in ends}) == 1, (c, lines)
    # the first number column starts two columns after the widest type name (14 columns: 检查（实验室）)
    widest = max(_column_ends(l)[0] for l in table)
    assert widest == 14
    rules = [l for l in lines if l and set(l) <= {"-", " "}]
    assert rules and all(_column_ends(r) == [widest, *ends[0][1:]] for r in rules)


@st.composite
def gold_and_pred(draw):
    def doc_spans():
        return st.lists(
            st.builds(
                lambda a, n, t: Span(a, a + n, t),
                st.integers(0, 20), st.integers(1, 4), st.sampled_from([A, B, "C"]),
            ),
            max_size=6,
        )

    ids = draw(st.lists(st.sampled_from("abcde"), unique=True, max_size=5))
    gold = {i: draw(doc_spans()) for i in ids}
    pred = {i: draw(doc_spans()) for i in ids if draw(st.booleans())}
    return gold, pred


@given(gold_and_pred())
def test_counts_add_up(case):
    gold, pred = case
    r = evaluate(gold, pred)
    n_gold = sum(len(v) for v in gold.values())
    n_pred = sum(len(v) for v in pred.values())
    assert r.micro.tp + r.micro.fn == n_gold == r.entities == r.micro.support
    assert r.micro.tp + r.micro.fp == n_pred
    for k in ("tp", "fp", "fn"):
        assert sum(getattr(p, k) for p in r.per_type.values()) == getattr(r.micro, k)
    assert 0.0 <= r.micro.f1 <= 1.0
    assert evaluate(gold, gold).micro.f1 == (1.0 if n_gold else 0.0)
    # swapping roles swaps precision and recall
    if set(pred) == set(gold):
        s = evaluate(pred, gold)
        assert (s.micro.precision, s.micro.recall) == (r.micro.recall, r.micro.precision)


# ----------------------------------------------------------------------------------------------
# Cross-check against seqeval's strict entity scores (IOB2) on the same predictions
# ----------------------------------------------------------------------------------------------

DOC_LEN = 30


@st.composite
def tiling(draw):
    """Non-overlapping spans of one document (what a BIO sequence can hold)."""
    spans, pos = [], 0
    while pos < DOC_LEN:
        gap = draw(st.integers(0, 4))
        length = draw(st.integers(1, 5))
        start = pos + gap
        if start + length > DOC_LEN or not draw(st.booleans()):
            pos = start + 1
            continue
        spans.append(Span(start, start + length, draw(st.sampled_from(["DIS", "DRUG", "BODY"]))))
        pos = start + length
    return spans


def _bio(spans):
    tags = ["O"] * DOC_LEN
    for s in spans:
        tags[s.start] = f"B-{s.type}"
        for i in range(s.start + 1, s.end):
            tags[i] = f"I-{s.type}"
    return tags


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # seqeval's
# averages over a draw with no gold entity
@settings(deadline=None, max_examples=80)
@given(st.lists(st.tuples(tiling(), tiling()), min_size=1, max_size=6))
def test_scores_equal_seqeval_strict_iob2(docs):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    gold = {f"d{i}": g for i, (g, _) in enumerate(docs)}
    pred = {f"d{i}": p for i, (_, p) in enumerate(docs)}
    y_true = [_bio(gold[k]) for k in gold]
    y_pred = [_bio(pred[k]) for k in gold]
    r = evaluate(gold, pred)
    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    assert r.micro.precision == pytest.approx(precision_score(y_true, y_pred, **kw))
    assert r.micro.recall == pytest.approx(recall_score(y_true, y_pred, **kw))
    assert r.micro.f1 == pytest.approx(f1_score(y_true, y_pred, **kw))
    per_type = classification_report(y_true, y_pred, output_dict=True, **kw)
    for typ, prf in r.per_type.items():
        if prf.support:  # seqeval lists the types of gold only
            assert prf.precision == pytest.approx(per_type[typ]["precision"]), typ
            assert prf.recall == pytest.approx(per_type[typ]["recall"]), typ
            assert prf.f1 == pytest.approx(per_type[typ]["f1-score"]), typ
            assert prf.support == per_type[typ]["support"], typ
