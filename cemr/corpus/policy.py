"""The rejection policy for labeled data: when a source lost too many records to be used.

A reader never stops at a bad record: it rejects it and counts it (``ReadReport``). Whether the
run may go on with what was kept is decided here, once the source has been read, by
``check_rejections`` (config keys ``data.max_rejected`` and ``data.strict``):

* every record rejected (nothing kept of N > 0 records): always an error;
* more than ``max_rejected`` of the records rejected: an error;
* with ``strict``, any rejected record is an error.

Repaired records (a span dropped, the record kept) do not count: their issues are in the report.
"""
from __future__ import annotations

from .document import CorpusError, ReadReport

MAX_LISTED = 10  # rejection issues quoted in the error


def rejection_problem(report: ReadReport, max_rejected: float, strict: bool) -> str | None:
    """Why the records ``report`` kept may not be used, or None when they may."""
    if not 0 <= max_rejected <= 1:
        raise ValueError(f"max_rejected must be in [0, 1], got {max_rejected}")
    if report.read == 0 or report.rejected == 0:
        return None
    fraction = report.rejected / report.read
    counts = f"{report.rejected} of {report.read} records rejected ({fraction:.2%})"
    if report.kept == 0:
        return f"nothing could be read: {counts}"
    if strict:
        return f"{counts} and data.strict is set"
    if fraction > max_rejected:
        return f"{counts}, more than data.max_rejected={max_rejected:g}"
    return None


def check_rejections(report: ReadReport, source: str, max_rejected: float = 0.01,
                     strict: bool = False) -> None:
    """Raise ``CorpusError`` naming ``source``, the counts, the reasons and the first
    ``MAX_LISTED`` rejected records ("... and N more") when the policy refuses the read (see the
    module docstring); call it after the documents were consumed."""
    problem = rejection_problem(report, max_rejected, strict)
    if problem is None:
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.reasons.items()))
    lines = report.issue_lines(MAX_LISTED, action="rejected")
    listing = "".join(f"\n  {line}" for line in lines)
    raise CorpusError(source, None, f"{problem} (reasons: {reasons}); first rejections:{listing}")
