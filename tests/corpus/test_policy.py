"""The rejection policy for labeled sources: all rejected, too many rejected, strict."""

import pytest

from cemr.corpus import CorpusError, ReadReport, check_rejections, read_documents
from cemr.corpus.policy import rejection_problem
from cemr.corpus.validate import RecordBuilder
from shared_data import real






def report_of(kept, rejected, path="c.jsonl"):
    report = ReadReport(max_issues=5)
    for k in range(kept):
        assert RecordBuilder(report, path=path, line=k + 1).build(str(k), "text") is not None
    for k in range(rejected):
        RecordBuilder(report, path=path, line=kept + k + 1).reject(f"bad record {k}", "bad_json")
    return report


def test_within_the_limit_passes():
    check_rejections(report_of(100, 0), "data.train x", 0.01, False)
    check_rejections(report_of(99, 1), "data.train x", 0.01, False)  # exactly 1%
    check_rejections(ReadReport(), "data.train x", 0.0, True)  # nothing read: not this check's job
    assert rejection_problem(report_of(5, 0), 0.0, True) is None


def test_too_many_rejected_names_source_counts_and_first_errors():
    with pytest.raises(CorpusError) as exc:
        check_rejections(report_of(98, 2), "data.train /d/train.jsonl", 0.01, False)
    message = str(exc.value)
    assert message.startswith("data.train /d/train.jsonl: 2 of 100 records rejected (2.00%), "
                              "more than data.max_rejected=0.01 (reasons: bad_json: 2)")
    assert "c.jsonl:99: bad record 0 (rejected)" in message
    assert "... and" not in message


def test_all_rejected_always_fails_and_the_list_is_capped():
    with pytest.raises(CorpusError, match=r"(?s)nothing could be read: 30 of 30 records rejected "
                                          r"\(100\.00%\).*c\.jsonl:5: bad record 4 \(rejected\)"
                                          r"\n  \.\.\. and 25 more$"):
        check_rejections(report_of(0, 30), "data.dev d", 1.0, False)


def test_strict_refuses_any_rejection():
    check_rejections(report_of(1000, 1), "s", 0.01, False)
    with pytest.raises(CorpusError, match="1 of 1001 records rejected .* data.strict is set"):
        check_rejections(report_of(1000, 1), "s", 0.01, True)
    with pytest.raises(ValueError, match="max_rejected"):
        check_rejections(report_of(1, 0), "s", 1.5, False)


def test_issue_lists_in_reports_are_capped(tmp_path):
    report = report_of(0, 30)
    assert report.noted == 30 and len(report.issues) == 5
    d = report.to_dict(max_issues=3)
    assert len(d["issues"]) == 3 and d["issues_left_out"] == 27
    assert report.to_dict()["issues_left_out"] == 25  # beyond max_issues: counted, not kept
    assert report.issue_lines(2)[-1] == "... and 28 more"


def test_shared_labeled_sets_pass_the_default_policy():
    # the figures behind data.max_rejected=0.01: both shared training sets reject nothing
    for fmt, path in (("ccks2017", real("ccks2017", "train")), ("yidu", real("yidu_s4k"))):
        report = ReadReport()
        n = sum(1 for _ in read_documents(fmt, path, report=report))
        assert n == report.read and report.rejected == 0
        check_rejections(report, f"data.train {path}", 0.01, True)
