"""cemr.lexicon.matching: the FMM / BMM rules, checked by hand and against naive maximum matching."""
import random

import pytest

from cemr.corpus.document import Span
from cemr.lexicon import Lexicon, backward_max_match, bio_labels, bmm, bmm_tags, forward_max_match


def lex_of(*terms: str, type_: str = "T") -> Lexicon:
    return Lexicon({t: type_ for t in terms})


def words(text, segs):
    return [text[s:e] for s, e in segs]


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


def test_all_words_lists_every_occurrence_against_a_naive_scan():
    lex = Lexicon({"糖尿病": "DIS", "尿病": "DIS", "病": "SYM", "尿": "SYM", "糖尿病肾病": "DIS"})
    text = "糖尿病肾病伴尿病"
    from cemr.lexicon import all_words

    got = all_words(text, lex)
    naive = sorted((i, j, lex.get(text[i:j])) for i in range(len(text)) for j in range(i + 1, len(text) + 1)
                   if lex.get(text[i:j]) is not None)
    assert got == naive
    assert (0, 5, "DIS") in got and (1, 3, "DIS") in got and (4, 5, "SYM") in got
    # BMM keeps one segmentation only: the nested terms are what all_words adds
    assert bmm(text, lex) == [Span(0, 5, "DIS"), Span(6, 8, "DIS")]
    assert all_words("", lex) == [] and all_words("无匹配", lex) == []
