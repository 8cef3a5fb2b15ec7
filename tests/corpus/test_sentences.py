import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import (
    Sentence,
    SplitStats,
    merge_predictions,
    spans_cut,
    split_document,
    split_text,
)


def pieces(text, ranges):
    return [text[a:b] for a, b in ranges]


def test_splits_after_sentence_punctuation_and_newlines():
    text = "患者头痛。无发热！咳嗽？否；\n既往史：无\r\n 体检正常"
    r = split_text(text, 100)
    assert pieces(text, r) == ["患者头痛。", "无发热！", "咳嗽？", "否；", "既往史：无", "体检正常"]


def test_punctuation_runs_and_closing_quotes_stay_with_their_sentence():
    text = "他说：“好了。”然后走了！！下一句?!（注：无。）完"
    assert pieces(text, split_text(text, 100)) == [
        "他说：“好了。”", "然后走了！！", "下一句?!", "（注：无。）", "完",
    ]


def test_commas_only_when_too_long():
    text = "左侧肢体无力，言语不清，头晕。"
    assert pieces(text, split_text(text, 100)) == [text]
    # the last comma within max_len is used
    assert pieces(text, split_text(text, 12)) == ["左侧肢体无力，言语不清，", "头晕。"]
    assert pieces(text, split_text(text, 11)) == ["左侧肢体无力，", "言语不清，头晕。"]


def test_hard_cut_without_punctuation():
    text = "一二三四五六七八九十"
    assert pieces(text, split_text(text, 4)) == ["一二三四", "五六七八", "九十"]
    assert split_text(text, 10) == [(0, 10)]


def test_whitespace_is_stripped_but_offsets_are_exact():
    text = "  \n\u3000第一句。   \n\n  第二句  \n \t"
    r = split_text(text, 100)
    assert pieces(text, r) == ["第一句。", "第二句"]
    assert r[0][0] == 4
    assert split_text("", 5) == []
    assert split_text(" \n\u3000 ", 5) == []


def test_protected_spans_are_not_cut_when_avoidable():
    text = "患者有高血压病史十年余"
    span = Span(3, 6, "疾病和诊断")  # 高血压
    r = split_text(text, 4, protect=[span])
    assert all(b - a <= 4 for a, b in r)
    assert spans_cut(r, [span]) == []
    assert any(a <= 3 and 6 <= b for a, b in r)
    # without protection the hard cut at 4 would split it
    assert spans_cut(split_text(text, 4), [span]) == [span]


def test_sentence_punctuation_inside_a_span_is_not_a_cut():
    text = "诊断：脑梗死；高血压。"
    span = Span(3, 10, "疾病和诊断")  # 脑梗死；高血压 (an odd, but given, mention)
    assert pieces(text, split_text(text, 100, protect=[span])) == [text]
    assert pieces(text, split_text(text, 100)) == ["诊断：脑梗死；", "高血压。"]


def test_a_span_longer_than_max_len_is_cut_and_reported():
    text = "无。右侧大脑中动脉供血区梗死。"
    long_span = Span(2, 14, "疾病和诊断")
    short = Span(0, 1, "X")
    r = split_text(text, 5, protect=[short, long_span])
    assert all(b - a <= 5 for a, b in r)
    assert spans_cut(r, [short, long_span]) == [long_span]
    stats = SplitStats()
    doc = Document("d", text, [short, long_span])
    sents = split_document(doc, 5, stats)
    assert [s.spans for s in sents][0] == [short]
    assert sum(len(s.spans) for s in sents) == 1
    assert (stats.spans, stats.spans_kept, stats.spans_dropped) == (2, 1, 1)
    assert stats.dropped == [("d", long_span)]
    assert stats.to_dict()["dropped"] == [{"doc_id": "d", "start": 2, "end": 14, "type": "疾病和诊断"}]


def test_split_document_and_merge_back():
    text = "主诉：头痛3天。\n查体：双肺呼吸音清，心率80次/分。"
    spans = [Span(3, 5, "症状和体征"), Span(12, 14, "身体部位"), Span(19, 21, "检查和检验")]
    doc = Document("r1", text, spans, source="x.txt")
    stats = SplitStats()
    sents = split_document(doc, 100, stats)
    assert [s.text for s in sents] == ["主诉：头痛3天。", "查体：双肺呼吸音清，心率80次/分。"]
    assert [(s.doc_id, s.sent_id, s.offset) for s in sents] == [("r1", 0, 0), ("r1", 1, 9)]
    assert sents[1].spans == [Span(3, 5, "身体部位"), Span(10, 12, "检查和检验")]
    assert sents[1].text[3:5] == "双肺" and sents[1].end == len(text)
    merged = merge_predictions(sents, [s.spans for s in sents])
    assert merged == {"r1": spans}
    assert (stats.documents, stats.sentences, stats.spans_dropped) == (1, 2, 0)
    assert Sentence.from_dict(sents[1].to_dict()) == sents[1]


def test_merge_predictions_keeps_documents_without_predictions_and_checks_input():
    sents = split_document(Document("a", "一。二。"), 10) + split_document(Document("b", "三"), 10)
    assert merge_predictions(sents, [[], [Span(0, 1, "X")], []]) == {"a": [Span(2, 3, "X")], "b": []}
    with pytest.raises(ValueError, match="fewer span lists"):
        merge_predictions(sents, [[], []])
    with pytest.raises(ValueError, match="more span lists"):
        merge_predictions(sents, [[], [], [], []])
    with pytest.raises(ValueError, match="'a' sentence 1: span .* past the sentence length 2"):
        merge_predictions(sents, [[], [Span(0, 3, "X")], []])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="max_len"):
        split_text("abc", 0)
    with pytest.raises(ValueError, match=r"document 'd' \(f.txt:3\): span .* past the text length 3"):
        split_document(Document("d", "abc", [Span(1, 5, "X")], source="f.txt:3"), 10)


# -- properties ---------------------------------------------------------------------------------

ALPHABET = "患者头痛发热咳嗽高血压abc12" + "。！？；!?;\n，,、 \u3000\t\r”）"


@st.composite
def docs(draw):
    text = draw(st.text(alphabet=ALPHABET, max_size=120))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=16)))
    spans = [Span(a, b, draw(st.sampled_from("XY"))) for a, b in zip(cuts[::2], cuts[1::2])]
    return Document("doc", text, spans), draw(st.integers(1, 30))


def check_ranges(text, ranges, max_len):
    assert ranges == sorted(ranges)
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b <= c
    hits = [0] * len(text)
    for a, b in ranges:
        assert 0 <= a < b <= len(text)
        assert b - a <= max_len
        for i in range(a, b):
            hits[i] += 1
    for i, ch in enumerate(text):
        assert hits[i] == (1 if not ch.isspace() else hits[i])
        assert hits[i] <= 1


@settings(max_examples=300, deadline=None)
@given(docs())
def test_split_properties(case):
    doc, max_len = case
    text = doc.text
    plain = split_text(text, max_len)
    check_ranges(text, plain, max_len)
    for a, b in plain:  # no protection: pieces never start or end with whitespace
        assert text[a:b] == text[a:b].strip()

    stats = SplitStats()
    sents = split_document(doc, max_len, stats)
    check_ranges(text, [(s.offset, s.end) for s in sents], max_len)
    assert [s.sent_id for s in sents] == list(range(len(sents)))
    for s in sents:
        assert s.text and s.text == text[s.offset:s.offset + len(s.text)]
        for sp in s.spans:
            assert sp.end <= len(s.text)
    assert stats.spans == stats.spans_kept + stats.spans_dropped == len(doc.spans)
    merged = merge_predictions(sents, [s.spans for s in sents])
    kept = [sp for sp in doc.spans if sp not in {d for _, d in stats.dropped}]
    assert merged.get("doc", []) == kept
    if all(len(sp) <= max_len for sp in doc.spans):
        assert stats.spans_dropped == 0
        assert merged.get("doc", []) == doc.spans
    else:
        assert all(len(sp) > max_len for _, sp in stats.dropped)
