"""cemr.analysis: error categories, breakdowns that add up, seen / lexicon splits, similarity to training text."""
import random

import pytest

from cemr.analysis import (
    BOUNDARY,
    BOUNDARY_TYPE,
    CATEGORIES,
    EXACT,
    EXACT_DUP,
    GOLD_SIDE,
    IN_LEXICON,
    MISSED,
    NEAR_DUP,
    NO_DUP,
    OUT_OF_LEXICON,
    PRED_SIDE,
    SEEN_OTHER,
    SEEN_TYPE,
    SPURIOUS,
    TYPE_ERROR,
    UNSEEN,
    MentionIndex,
    Outcome,
    SentenceIndex,
    SentenceLocator,
    Tally,
    breakdown,
    bucket_order,
    categorize,
    categorize_document,
    dictionary_agreement,
    length_bucket,
    lexicon_key,
    mention_seen,
    natural_key,
    section_of,
    sentence_overlap,
    tally,
    type_key,
)
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence
from cemr.lexicon import Lexicon
from cemr.metrics import EvalError, evaluate


def S(a, b, t="A"):
    return Span(a, b, t)


def cats(gold, pred):
    return [(o.category, o.gold, o.pred, o.overlapped) for o in categorize_document("d", gold, pred)]


# -- each category ---------------------------------------------------------------------------------


def test_exact():
    assert cats([S(0, 3)], [S(0, 3)]) == [(EXACT, S(0, 3), S(0, 3), False)]


def test_type_error_same_boundaries_other_type():
    assert cats([S(0, 3, "A")], [S(0, 3, "B")]) == [(TYPE_ERROR, S(0, 3, "A"), S(0, 3, "B"), False)]


def test_boundary_error_overlapping_same_type():
    assert cats([S(0, 3)], [S(1, 4)]) == [(BOUNDARY, S(0, 3), S(1, 4), False)]


def test_boundary_and_type_error():
    assert cats([S(0, 3, "A")], [S(2, 6, "B")]) == [(BOUNDARY_TYPE, S(0, 3, "A"), S(2, 6, "B"), False)]


def test_missed_and_spurious_without_overlap():
    assert cats([S(0, 3)], [S(3, 5)]) == [(MISSED, S(0, 3), None, False), (SPURIOUS, None, S(3, 5), False)]
    assert cats([S(0, 3)], []) == [(MISSED, S(0, 3), None, False)]
    assert cats([], [S(0, 3)]) == [(SPURIOUS, None, S(0, 3), False)]


def test_same_boundaries_beat_same_type():
    # [0,4) B has the gold's boundaries: a type error; [0,3) A would be a boundary error, left spurious
    out = cats([S(0, 4, "A")], [S(0, 3, "A"), S(0, 4, "B")])
    assert out == [(TYPE_ERROR, S(0, 4, "A"), S(0, 4, "B"), False), (SPURIOUS, None, S(0, 3, "A"), True)]


def test_same_type_beats_other_type_among_overlaps():
    out = cats([S(0, 4, "A")], [S(0, 5, "B"), S(1, 3, "A")])
    assert out[0] == (BOUNDARY, S(0, 4, "A"), S(1, 3, "A"), False)
    assert out[1] == (SPURIOUS, None, S(0, 5, "B"), True)


def test_largest_overlap_pairs_first():
    out = cats([S(0, 5)], [S(0, 2), S(1, 5)])
    assert out[0] == (BOUNDARY, S(0, 5), S(1, 5), False)
    assert out[1] == (SPURIOUS, None, S(0, 2), True)


def test_one_long_prediction_over_two_gold_mentions():
    out = cats([S(0, 2), S(2, 4)], [S(0, 4)])
    assert out == [(BOUNDARY, S(0, 2), S(0, 4), False), (MISSED, S(2, 4), None, True)]


def test_a_prediction_pairs_once_even_when_gold_repeats():
    out = cats([S(0, 3), S(0, 3)], [S(0, 3)])
    assert [o[0] for o in out] == [EXACT, MISSED]
    assert out[1][3] is True  # overlapped by the prediction paired with the first copy


def test_the_result_does_not_depend_on_input_order():
    gold = [S(0, 2), S(2, 4), S(6, 9, "B"), S(10, 12)]
    pred = [S(0, 4), S(6, 9, "A"), S(11, 14, "B"), S(20, 21)]
    first = cats(gold, pred)
    for seed in range(5):
        g, p = gold[:], pred[:]
        random.Random(seed).shuffle(g)
        random.Random(seed + 10).shuffle(p)
        assert cats(g, p) == first


def test_categorize_checks_documents_like_evaluate():
    docs = [Document("a", "x" * 10, [S(0, 3)]), Document("b", "x" * 10, [S(1, 2)])]
    out = categorize(docs, {"a": [S(0, 3)]})  # b has no predictions: its gold is missed
    assert [(o.doc_id, o.category) for o in out] == [("a", EXACT), ("b", MISSED)]
    with pytest.raises(EvalError, match="'zz' is not in gold"):
        categorize(docs, {"zz": [S(0, 1)]})


# -- accounting ------------------------------------------------------------------------------------


def _random_corpus(seed, n_docs=30):
    rng = random.Random(seed)
    gold, pred = {}, {}
    for d in range(n_docs):
        g, p = [], []
        for _ in range(rng.randint(0, 8)):
            a = rng.randint(0, 60)
            g.append(S(a, a + rng.randint(1, 6), rng.choice("AB")))
        for s in g:  # predictions near the gold ones, plus noise
            r = rng.random()
            if r < 0.4:
                p.append(s)
            elif r < 0.6:
                p.append(S(s.start, s.end, "B" if s.type == "A" else "A"))
            elif r < 0.8:
                a = max(0, s.start + rng.randint(-2, 2))
                p.append(S(a, max(a + 1, s.end + rng.randint(-1, 2)), rng.choice("AB")))
        for _ in range(rng.randint(0, 3)):
            a = rng.randint(0, 60)
            p.append(S(a, a + rng.randint(1, 6), rng.choice("AB")))
        gold[f"d{d}"], pred[f"d{d}"] = g, p
    return gold, pred


@pytest.mark.parametrize("seed", range(8))
def test_every_gold_and_predicted_span_is_accounted_for_exactly_once(seed):
    gold, pred = _random_corpus(seed)
    out = categorize(gold, pred)
    for doc_id in gold:
        mine = [o for o in out if o.doc_id == doc_id]
        assert sorted(o.gold for o in mine if o.gold is not None) == sorted(gold[doc_id])
        assert sorted(o.pred for o in mine if o.pred is not None) == sorted(pred[doc_id])
        for o in mine:
            if o.category in (EXACT,):
                assert o.gold == o.pred
            elif o.category == TYPE_ERROR:
                assert (o.gold.start, o.gold.end) == (o.pred.start, o.pred.end) and o.gold.type != o.pred.type
            elif o.category in (BOUNDARY, BOUNDARY_TYPE):
                assert o.gold.overlaps(o.pred) and (o.gold.start, o.gold.end) != (o.pred.start, o.pred.end)
                assert (o.gold.type == o.pred.type) == (o.category == BOUNDARY)
    t = tally(out)
    n_gold, n_pred = sum(map(len, gold.values())), sum(map(len, pred.values()))
    assert t.gold == n_gold and t.pred == n_pred
    micro = evaluate(gold, pred).micro
    assert (t.counts[EXACT], t.pred - t.counts[EXACT], t.gold - t.counts[EXACT]) == (micro.tp, micro.fp, micro.fn)
    assert t.prf == micro
    for key in (type_key, lambda o: o.doc_id, lambda o: o.category):
        groups = breakdown(out, key)
        assert sum(g.gold for g in groups.values()) == n_gold
        assert sum(g.pred for g in groups.values()) == n_pred
        for c in CATEGORIES:
            assert sum(g.counts[c] for g in groups.values()) == t.counts[c]


def test_tally_dict_and_unknown_category():
    t = tally([Outcome("d", EXACT, S(0, 1), S(0, 1)), Outcome("d", MISSED, S(2, 3), None, overlapped=True),
               Outcome("d", SPURIOUS, None, S(5, 6))])
    d = t.to_dict()
    assert (d["gold"], d["pred"], d["exact"], d["missed"], d["missed_overlapped"], d["spurious"]) == (2, 2, 1, 1, 1, 1)
    assert d["precision"] == d["recall"] == 0.5
    assert set(GOLD_SIDE) ^ set(PRED_SIDE) == {MISSED, SPURIOUS}
    with pytest.raises(ValueError, match="unknown outcome category 'oops'"):
        Tally().add(Outcome("d", "oops", S(0, 1), None))


# -- keys ------------------------------------------------------------------------------------------


def test_type_key_uses_the_gold_type_and_a_spurious_predictions_own():
    out = categorize_document("d", [S(0, 3, "A")], [S(0, 3, "B"), S(5, 6, "C")])
    assert [type_key(o) for o in out] == ["A", "C"]


def test_length_buckets_and_their_order():
    assert [length_bucket(n) for n in (1, 20, 21, 50, 51, 200, 201)] == \
        ["1-20", "1-20", "21-50", "21-50", "51-100", "101-200", ">200"]
    assert sorted([">200", "21-50", "1-20", "101-200"], key=bucket_order) == ["1-20", "21-50", "101-200", ">200"]


def test_sentence_locator_finds_the_sentence_of_an_offset():
    sents = [Sentence("d", 0, 0, "abcde"), Sentence("d", 1, 6, "fghijklmnopqrstuvwxyz")]  # offset 5: a space
    loc = SentenceLocator(sents)
    assert [loc.length("d", k) for k in (0, 4, 5, 6, 26)] == [5, 5, 21, 21, 21]
    o = Outcome("d", MISSED, S(7, 9), None)
    assert loc.key()(o) == "21-50"
    with pytest.raises(KeyError, match="'zz'"):
        loc.length("zz", 0)


def test_section_of_ccks2017_ids():
    assert section_of("病史特点-12") == "病史特点"
    assert section_of("一般项目-191") == "一般项目"
    assert section_of("subtask1_training_part1:3") == "-"
    assert sorted(["r-10", "r-9", "r-100"], key=natural_key) == ["r-9", "r-10", "r-100"]


def test_seen_and_unseen_mention_strings():
    train = [Document("t", "糖尿病高血压", [S(0, 3, "DIS"), S(3, 6, "SYM")])]
    idx = MentionIndex(train)
    assert idx.label("糖尿病", "DIS") == SEEN_TYPE
    assert idx.label("高血压", "DIS") == SEEN_OTHER
    assert idx.label("肺炎", "DIS") == UNSEEN
    doc = Document("e", "肺炎糖尿病高血压", [S(0, 2, "DIS"), S(2, 5, "DIS"), S(5, 8, "DIS")])
    out = categorize([doc], {"e": [S(0, 2, "DIS")]})
    groups = breakdown(out, idx.key({"e": doc.text}))
    assert {k: (v.gold, v.counts[EXACT]) for k, v in groups.items()} == \
        {UNSEEN: (1, 1), SEEN_TYPE: (1, 0), SEEN_OTHER: (1, 0)}
    with pytest.raises(KeyError, match="'e'"):
        idx.key({})(out[0])


def test_in_and_out_of_lexicon():
    doc = Document("e", "肺炎糖尿病", [S(0, 2, "DIS"), S(2, 5, "DIS")])
    out = categorize([doc], {"e": [S(2, 5, "DIS")]})
    lex = Lexicon({"糖尿病": "DIS"})
    groups = breakdown(out, lexicon_key(lex, {"e": doc.text}))
    assert {k: (v.gold, v.counts[EXACT], v.counts[MISSED]) for k, v in groups.items()} == \
        {OUT_OF_LEXICON: (1, 0, 1), IN_LEXICON: (1, 1, 0)}
    assert breakdown(out, lexicon_key({"肺炎"}, {"e": doc.text}))[IN_LEXICON].gold == 1


# -- similarity to training text -------------------------------------------------------------------

LONG = "患者三天前无明显诱因出现发热，最高体温三十九度，伴咳嗽咳痰，无胸痛胸闷，自服药物后未见好转"


def test_sentence_index_exact_near_and_none():
    idx = SentenceIndex(threshold=0.8)
    idx.add("r1", LONG)
    idx.add("r2", "无。")
    assert idx.match(LONG.replace("，", " ， ")) == (EXACT_DUP, "r1")  # whitespace is normalised away
    assert idx.match("无。") == (EXACT_DUP, "r2")
    assert idx.match(LONG[:-1] + "转好") == (NEAR_DUP, "r1")  # the last two chars swapped
    assert idx.match("右下肢疼痛两周") == (NO_DUP, None)
    assert idx.match("   ") == (NO_DUP, None)


def test_sentence_overlap_and_mention_seen_by_group():
    idx = SentenceIndex()
    idx.add(0, LONG)
    sents = [Sentence("一般项目-1", 0, 0, LONG, [S(12, 14, "SYM")]),
             Sentence("一般项目-1", 1, 50, "右下肢疼痛两周", [S(0, 3, "BODY"), S(3, 5, "SYM")]),
             Sentence("病史特点-1", 0, 0, LONG[:-1] + "转好"), Sentence("病史特点-1", 1, 60, "  ")]
    ov = sentence_overlap(sents, idx, lambda s: section_of(s.doc_id))
    assert ov["一般项目"].to_dict()["sentences"] == 2 and ov["一般项目"].share(EXACT_DUP) == 0.5
    assert ov["一般项目"].share(EXACT_DUP, chars=True) == len(LONG) / (len(LONG) + 7)
    assert ov["一般项目"].to_dict()["exact_or_near_mention_share"] == pytest.approx(1 / 3)
    assert ov["病史特点"].total == 1 and ov["病史特点"].sentences[NEAR_DUP] == 1  # whitespace sentence skipped
    mentions = MentionIndex([Document("t", "发热咳嗽", [S(0, 2, "SYM"), S(2, 4, "SYM")])])
    docs = [Document("e", "发热发热胸痛", [S(0, 2, "SYM"), S(2, 4, "SYM"), S(4, 6, "SYM")])]
    seen = mention_seen(docs, mentions)["all"].to_dict()
    assert (seen["mentions"], seen[SEEN_TYPE], seen[UNSEEN], seen["distinct"]) == (3, 2, 1, 2)
    assert seen["seen_share"] == pytest.approx(2 / 3) and seen["distinct_unseen_share"] == 0.5


def test_dictionary_agreement_counts_what_bmm_marks():
    lex = Lexicon({"糖尿病": "DIS", "胰岛素": "DIS", "高血压": "DIS"})
    sents = [Sentence("d", 0, 0, "糖尿病用胰岛素高血压", [S(0, 3, "DIS"), S(4, 7, "DRUG")])]
    a = dictionary_agreement(sents, lambda s: lex)["all"]
    assert (a.gold, a.gold_term, a.gold_term_type, a.words, a.exact, a.bounds) == (2, 2, 1, 3, 1, 2)
    d = a.to_dict()
    assert d["word_recall"] == 0.5 and d["word_precision"] == pytest.approx(1 / 3) and d["bounds_recall"] == 1.0
