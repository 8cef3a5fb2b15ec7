"""Building a lexicon: votes from term lists, in-memory terms and training mentions, one type each."""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable, Mapping, Sequence

from cemr.config import LexiconConfig, LexiconSource
from cemr.corpus.document import Document
from cemr.lexicon.accounting import LexiconReport, SourceReport
from cemr.lexicon.files import read_lines
from cemr.lexicon.filters import STRIP_CHARS, TermFilter
from cemr.lexicon.lexicon import Lexicon
from cemr.lexicon.presets import get_preset, lexicons_dir
from cemr.lexicon.sources import Retype, mention_votes, read_source, term_votes
from cemr.lexicon.voting import Votes, resolve


class LexiconBuilder:
    """Collects votes from term lists and training mentions, then resolves one type per term.

    ``type_order`` breaks ties (see :func:`~cemr.lexicon.voting.resolve_type`); ``retype`` refines
    list types.
    """

    def __init__(self, term_filter: TermFilter = TermFilter(), type_order: Sequence[str] = (),
                 retype: Retype | None = None):
        self.term_filter = term_filter
        self.type_order = tuple(type_order)
        self.retype = retype
        self.votes: Votes = {}
        self.reports: list[SourceReport] = []

    def add_source(self, src: LexiconSource, name: str | None = None) -> SourceReport:
        rep = read_source(src, self.term_filter, self.votes, self.retype, name)
        self.reports.append(rep)
        return rep

    def add_terms(self, terms: Mapping[str, str], name: str = "terms") -> SourceReport:
        """One vote per entry of an in-memory ``term -> type`` mapping (filtered like a list)."""
        rep = term_votes(terms, self.term_filter, self.votes, name)
        self.reports.append(rep)
        return rep

    def add_mentions(self, docs: Iterable[Document]) -> SourceReport:
        rep = mention_votes(docs, self.term_filter, lambda doc: self.votes)
        self.reports.append(rep)
        return rep

    def build(self) -> Lexicon:
        report = LexiconReport(sources=list(self.reports))
        terms = resolve(self.votes, self.type_order, report)
        report.count_terms(terms)
        votes = {t: Counter(c) for t, c in self.votes.items()}
        return Lexicon(terms, votes=votes, report=report)


def _stopwords(root: str, files: Iterable[str]) -> set[str]:
    """The stripped non-empty lines of the stop-word files (paths relative to ``root``)."""
    out: set[str] = set()
    for rel in files:
        out.update(w.strip(STRIP_CHARS) for w in read_lines(os.path.join(root, rel)) if w.strip(STRIP_CHARS))
    return out


def builder_from_config(cfg: LexiconConfig) -> LexiconBuilder:
    """A builder holding the votes of the configured preset's lists and of ``cfg.sources``
    (preset lists first; stop words: ``cfg.stopwords`` plus the preset's stop-word files)."""
    preset = get_preset(cfg.preset) if cfg.preset else None
    root = lexicons_dir()
    builder = LexiconBuilder(
        TermFilter.from_config(cfg, _stopwords(root, preset.stopword_files) if preset is not None else ()),
        preset.types if preset is not None else (),
        preset.retyper() if preset is not None else None,
    )
    if preset is not None:
        for src in preset.resolved_sources(root):
            builder.add_source(src, name=f"{preset.name}:{os.path.relpath(src.path, root)}")
    for src in cfg.sources:
        builder.add_source(src)
    return builder


def build_lexicon(cfg: LexiconConfig, train_docs: Iterable[Document] = ()) -> Lexicon:
    """The lexicon of a config: the preset's lists, ``cfg.sources`` and, when
    ``cfg.include_train_mentions``, every mention of ``train_docs`` (no folds: use
    :func:`~cemr.lexicon.folds.build_folded_lexicon` to match training documents out of fold)."""
    builder = builder_from_config(cfg)
    if cfg.include_train_mentions:
        builder.add_mentions(train_docs)
    return builder.build()
