"""Where votes come from: term list files, in-memory term mappings and training mentions.

Each reader adds votes ``term -> {type: count}`` to a vote table and returns the
:class:`~cemr.lexicon.accounting.SourceReport` accounting for every line or mention it read.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Callable, Iterable, Mapping

from cemr.config import LexiconSource, expand_path
from cemr.corpus.document import CorpusError, Document
from cemr.lexicon.accounting import SourceReport
from cemr.lexicon.files import read_lines
from cemr.lexicon.filters import STRIP_CHARS, TermFilter
from cemr.lexicon.voting import Votes

Retype = Callable[[str, str], str]  # (term, type) -> refined type (preset rules)

FORMATS = ("lines", "csv")


def _unknown_format(src: LexiconSource, path: str) -> CorpusError:
    return CorpusError(path, None, f"unknown lexicon source format {src.format!r} (expected lines or csv)")


def parse_entry(src: LexiconSource, path: str, lineno: int, line: str) -> tuple[str, str | None]:
    """``(raw term, code)`` of one line of a list; code is None when the format has none."""
    if src.format == "csv":
        if "," not in line:
            if not line.strip(STRIP_CHARS):
                return line, None
            raise CorpusError(path, lineno, f"expected 'term,CODE', got {line[:60]!r}")
        term, code = line.rsplit(",", 1)
        return term, code.strip(STRIP_CHARS)
    if src.format == "lines":
        if src.type_map:
            if "\t" not in line:
                if not line.strip(STRIP_CHARS):
                    return line, None
                raise CorpusError(path, lineno, f"expected 'term<TAB>CODE' (type_map is set), got {line[:60]!r}")
            term, rest = line.split("\t", 1)
            return term, rest.split("\t", 1)[0].strip(STRIP_CHARS)
        return line.split("\t", 1)[0], None
    raise _unknown_format(src, path)


def read_source(src: LexiconSource, term_filter: TermFilter, votes: Votes,
                retype: Retype | None = None, name: str | None = None) -> SourceReport:
    """Add one vote per distinct kept ``(term, type)`` of the list ``src`` to ``votes``; return its
    accounting (a repeated entry counts as a duplicate; a list typing a term two ways votes twice).

    Typing: ``csv`` rows are ``term,CODE`` and ``lines`` rows ``term[<TAB>extra]``. With a
    ``type_map``, the CODE (csv) or the first extra column (lines) is mapped through it, falling
    back to ``src.type``; a code that maps to nothing is rejected as ``unmapped_code``. Without a
    ``type_map`` every term gets ``src.type``; a list with neither is skipped whole (reported).
    ``retype(term, type)`` may refine the type (preset rules, counted as ``retyped``).
    """
    path = expand_path(src.path) or ""
    rep = SourceReport(name=name or os.path.basename(path), path=path)
    if src.format not in FORMATS:
        raise _unknown_format(src, path)
    if src.type is None and not src.type_map:
        if not os.path.isfile(path):
            raise CorpusError(path, None, "lexicon file not found")
        rep.skipped = "untyped list and no type configured"
        return rep
    seen: set[tuple[str, str]] = set()
    for lineno, line in enumerate(read_lines(path), start=1):
        rep.read += 1
        raw, code = parse_entry(src, path, lineno, line)
        term, reason = term_filter.clean(raw)
        if reason is None:
            type_ = src.type_map.get(code, src.type) if code is not None else src.type
            if type_ is None:
                reason = "unmapped_code"
        if reason is not None:
            rep.rejected[reason] += 1
            continue
        if retype is not None:
            new = retype(term, type_)
            rep.retyped += int(new != type_)
            type_ = new
        if (term, type_) in seen:
            rep.duplicates += 1
            continue
        seen.add((term, type_))
        votes.setdefault(term, Counter())[type_] += 1
        rep.kept += 1
        rep.types[type_] += 1
    return rep


def _vote(raw: str, type_: str, term_filter: TermFilter, votes: Votes, rep: SourceReport) -> None:
    """One vote for the filtered ``raw`` as ``type_`` (counted in ``rep`` as kept or rejected)."""
    rep.read += 1
    term, reason = term_filter.clean(raw)
    if reason is not None:
        rep.rejected[reason] += 1
        return
    votes.setdefault(term, Counter())[type_] += 1
    rep.kept += 1
    rep.types[type_] += 1


def term_votes(terms: Mapping[str, str], term_filter: TermFilter, votes: Votes,
               name: str = "terms") -> SourceReport:
    """One vote per entry of an in-memory ``term -> type`` mapping (filtered like a list)."""
    rep = SourceReport(name=name)
    for raw, type_ in terms.items():
        _vote(raw, type_, term_filter, votes, rep)
    return rep


def mention_votes(docs: Iterable[Document], term_filter: TermFilter,
                  into: Callable[[Document], Votes]) -> SourceReport:
    """One vote per training mention (``doc.text[span.start:span.end]``, filtered) into the vote
    table ``into(doc)`` chooses for the document (the global table, or its fold's)."""
    rep = SourceReport(name="train_mentions")
    for doc in docs:
        table = into(doc)
        for span in doc.spans:
            if span.end > len(doc.text):
                raise CorpusError(doc.source or doc.id, None,
                                  f"span [{span.start}, {span.end}) beyond the text ({len(doc.text)} chars)")
            _vote(doc.text[span.start:span.end], span.type, term_filter, table, rep)
    return rep
