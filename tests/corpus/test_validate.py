"""Pure validation functions and the record accounting of RecordBuilder."""
import pytest

from cemr.corpus.document import CorpusError, ReadReport, Span
from cemr.corpus.validate import (RawSpan, RecordBuilder, find_overlaps, mention_problem,
                                  offset_problem, resolve_overlaps, split_duplicates,
                                  type_problem)


def raw(start, end, type_="A", mention=None, line=None):
    return RawSpan(start, end, type_, mention, "f.ann", line)


def test_offset_problem():
    assert offset_problem(0, 3, 3) is None
    assert "negative" in offset_problem(-1, 2, 5)
    assert "empty or reversed" in offset_problem(2, 2, 5)
    assert "empty or reversed" in offset_problem(3, 2, 5)
    assert "beyond the text (length 5)" in offset_problem(2, 6, 5)


def test_mention_problem():
    assert mention_problem("患者头痛", 2, 4, "头痛") is None
    assert mention_problem("患者头痛", 2, 4, None) is None
    assert "'头疼' differs from the text '头痛'" in mention_problem("患者头痛", 2, 4, "头疼")
    assert mention_problem("a\nb", 0, 3, "a b", normalise=lambda s: s.replace("\n", " ")) is None


def test_type_problem():
    assert type_problem("症状", None) is None
    assert type_problem("症状", {"症状"}) is None
    assert "unknown entity type '药物'" in type_problem("药物", {"症状"})
    assert type_problem("", None) is not None
    assert type_problem(" x", None) is not None


def test_split_duplicates_keeps_first():
    a, b, c = raw(0, 2, line=1), raw(0, 2, line=2), raw(0, 2, "B", line=3)
    unique, dups = split_duplicates([a, b, c])
    assert unique == [a, c] and dups == [b]


def test_find_overlaps_nested_and_chained():
    outer, inner, later, apart = raw(0, 10), raw(2, 3), raw(5, 12), raw(20, 22)
    pairs = find_overlaps([apart, later, inner, outer])
    involved = {id(x) for pair in pairs for x in pair}
    assert {id(outer), id(inner), id(later)} <= involved and id(apart) not in involved
    assert find_overlaps([raw(0, 2), raw(2, 4)]) == []  # touching is not overlapping


def test_resolve_keep_longest():
    short, long_, other = raw(0, 2, line=1), raw(1, 6, line=2), raw(6, 8, line=3)
    kept, dropped = resolve_overlaps([short, long_, other], "keep_longest")
    assert kept == [long_, other]
    assert dropped == [(short, long_)]


def test_resolve_keep_first_is_text_order():
    first, long_, nested = raw(0, 2, line=1), raw(1, 6, line=2), raw(3, 4, line=3)
    kept, dropped = resolve_overlaps([long_, nested, first], "keep_first")
    assert kept == [first, nested]
    assert [d for d, _ in dropped] == [long_]


def test_resolve_ties_fall_to_the_earlier_annotation():
    a, b = raw(0, 3, "A"), raw(0, 3, "B")
    for policy in ("keep_longest", "keep_first"):
        kept, _ = resolve_overlaps([a, b], policy)
        assert kept == [a]
        kept, _ = resolve_overlaps([b, a], policy)
        assert kept == [b]


def test_resolve_unknown_policy():
    with pytest.raises(ValueError, match="overlap_policy"):
        resolve_overlaps([], "longest")


def _consistent(report):
    assert report.read == report.kept + report.rejected
    assert report.spans_read == report.spans_kept + report.spans_dropped


def test_builder_repairs_and_counts():
    report = ReadReport()
    b = RecordBuilder(report, path="doc.txt")
    text = "患者头痛三天"
    b.add_span(raw(2, 4, "症状", "头痛", line=1))
    b.add_span(raw(2, 4, "症状", "头痛", line=2))   # duplicate
    b.add_span(raw(4, 9, "症状", None, line=3))     # beyond the text
    b.add_span(raw(0, 2, "人", "病人", line=4))     # mention mismatch
    b.add_span(raw(2, 3, "症状", "头", line=5))     # nested in 2..4: dropped
    b.bad_span("cannot parse", "bad_line", line=6)
    doc = b.build("d1", text, source="doc.txt")
    assert doc.spans == [Span(2, 4, "症状")]
    assert (report.read, report.kept, report.rejected, report.repaired) == (1, 1, 0, 1)
    assert report.reasons == {"duplicate_span": 1, "bad_offsets": 1, "mention_mismatch": 1,
                              "overlap": 1, "bad_line": 1}
    assert report.spans_read == 6 and report.spans_kept == 1
    _consistent(report)
    lines = sorted(i.line for i in report.issues)
    assert lines == [2, 3, 4, 5, 6]
    assert all(i.path == "f.ann" for i in report.issues if i.line != 6)


def test_builder_unknown_types_dropped():
    report = ReadReport()
    b = RecordBuilder(report, path="x", types=frozenset({"A"}))
    b.add_span(raw(0, 1, "A"))
    b.add_span(raw(1, 2, "B"))
    doc = b.build("x", "ab")
    assert doc.spans == [Span(0, 1, "A")]
    assert report.reasons["unknown_type"] == 1 and report.repaired == 1


def test_builder_overlap_error_policy_rejects():
    report = ReadReport()
    b = RecordBuilder(report, path="x", overlap_policy="error")
    b.add_span(raw(0, 3, line=1))
    b.add_span(raw(1, 2, line=2))
    assert b.build("x", "abcd") is None
    assert (report.read, report.kept, report.rejected) == (1, 0, 1)
    assert report.reasons == {"overlap": 1}
    assert report.issues[0].line == 2 and report.issues[0].action == "rejected"
    _consistent(report)


def test_builder_strict_raises_with_file_and_line():
    b = RecordBuilder(ReadReport(), path="x.txt", strict=True)
    b.add_span(raw(0, 9, line=7))
    with pytest.raises(CorpusError, match=r"f\.ann:7: .*beyond the text"):
        b.build("x", "abc")
    b = RecordBuilder(ReadReport(), path="x.txt", strict=True, overlap_policy="error")
    b.add_span(raw(0, 2, line=1))
    b.add_span(raw(1, 3, line=2))
    with pytest.raises(CorpusError, match="overlaps"):
        b.build("x", "abc")


def test_builder_strict_does_not_raise_for_chosen_overlap_policy():
    report = ReadReport()
    b = RecordBuilder(report, path="x", strict=True, overlap_policy="keep_longest")
    b.add_span(raw(0, 2))
    b.add_span(raw(1, 3))
    b.add_span(raw(0, 3))
    assert b.build("x", "abc").spans == [Span(0, 3, "A")]
    assert report.reasons["overlap"] == 2


def test_builder_empty_text_rejected_and_spans_counted():
    report = ReadReport()
    b = RecordBuilder(report, path="x")
    b.add_span(raw(0, 1))
    assert b.build("x", "  \n") is None
    assert report.reasons == {"empty": 1} and report.rejected == 1
    _consistent(report)


def test_builder_finishes_once():
    b = RecordBuilder(ReadReport(), path="x")
    b.reject("bad", "bad_json")
    with pytest.raises(RuntimeError):
        b.build("x", "abc")
