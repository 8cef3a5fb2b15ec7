"""Out-of-fold lexicons: each training document is matched against a lexicon without its fold's mentions.

A lexicon holding every training mention marks every gold entity of a training sentence, so a
tagger learns to trust the feature blindly (see "A measured pitfall" in ``method.md``).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

from cemr.config import LexiconConfig
from cemr.corpus.document import CorpusError, Document
from cemr.lexicon.accounting import LexiconReport
from cemr.lexicon.builder import builder_from_config
from cemr.lexicon.filters import TermFilter
from cemr.lexicon.lexicon import Lexicon
from cemr.lexicon.sources import mention_votes
from cemr.lexicon.trie import TermIndex
from cemr.lexicon.voting import Votes, resolve, resolve_type


def doc_fold(doc_id: str, k: int) -> int:
    """The fold ``0..k-1`` of a document id: BLAKE2b of its UTF-8 bytes, mod ``k`` (stable across
    runs and processes, unlike Python's salted ``hash``)."""
    if k < 1:
        raise ValueError(f"doc_fold: k must be >= 1, got {k}")
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % k


class FoldedLexicon:
    """Out-of-fold lexicons: ``for_doc(train_id)`` lacks the mentions of that document's fold.

    ``base`` holds the external terms (its ``votes`` are reused when present, else one vote per
    term); every training mention adds a vote to the fold of its document,
    ``doc_fold(group(doc), k)`` (``group`` defaults to the document id: pass a record id for
    corpora split into sections, so one patient's sections share a fold). The lexicon of fold
    ``f`` resolves ``base votes + mention votes of all other folds``: a term mentioned only in
    fold ``f`` is absent from it, a term of the external lists always stays (its type may differ).
    ``full`` resolves all votes (use it for dev, test and unlabeled text; it equals
    :func:`~cemr.lexicon.builder.build_lexicon` on the same inputs). ``k == 0`` turns folds off:
    every document gets ``full`` (the measured pitfall, kept for the ablation). All lexicons share
    one trie.
    """

    def __init__(self, base: Lexicon, train_docs: Iterable[Document], k: int, *,
                 term_filter: TermFilter = TermFilter(), type_order: Sequence[str] = (),
                 group: Callable[[Document], str] | None = None):
        if k < 0:
            raise ValueError(f"FoldedLexicon: k must be >= 0, got {k}")
        self.k = k
        group = group or (lambda doc: doc.id)
        ext: Votes = base.votes if base.votes is not None else {t: Counter({ty: 1}) for t, ty in base.items()}
        fold_votes: list[Votes] = [{} for _ in range(max(k, 1))]
        self._doc_folds: dict[str, int] = {}

        def table(doc: Document) -> Votes:
            fold = doc_fold(group(doc), k) if k > 0 else 0
            prev = self._doc_folds.setdefault(doc.id, fold)
            if prev != fold:
                raise CorpusError(doc.source or doc.id, None,
                                  f"document id {doc.id!r} appears twice, in folds {prev} and {fold}")
            return fold_votes[fold]

        mention_report = mention_votes(train_docs, term_filter, table)
        total: Votes = {t: Counter(c) for t, c in ext.items()}
        for votes in fold_votes:
            for term, counter in votes.items():
                total.setdefault(term, Counter()).update(counter)
        report = LexiconReport(sources=list(base.report.sources) if base.report else [])
        report.sources.append(mention_report)
        full_terms = resolve(total, type_order, report)
        report.count_terms(full_terms)
        self.report = report

        self.full = Lexicon(full_terms, votes=total, report=report)
        self.folds: list[Lexicon] = []
        if k > 0:
            for votes in fold_votes:
                terms = dict(full_terms)
                for term, own in votes.items():
                    rest = total[term] - own  # Counter subtraction keeps positive counts only
                    if rest:
                        terms[term] = resolve_type(rest, type_order)
                    else:
                        del terms[term]
                self.folds.append(Lexicon(terms, report=report))
        self._attach_matchers()

    def _attach_matchers(self) -> None:
        """One trie over the full lexicon's terms; each fold gets a type table over it (a fold's
        terms are a subset of the full lexicon's)."""
        index = TermIndex(sorted(self.full))
        self.index = index
        for lex in (self.full, *self.folds):
            lex.attach_matcher(index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["index"] = None  # Lexicon pickles drop their matchers; rebuilt (shared) on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach_matchers()

    def fold_of(self, doc_id: str) -> int | None:
        """The fold of a training document id, None for a document not seen in training."""
        return self._doc_folds.get(doc_id) if self.k > 0 else None

    def for_doc(self, doc_id: str) -> Lexicon:
        """The lexicon to match document ``doc_id`` with: its fold's for a training document,
        ``full`` for any other id (dev, test, unlabeled) or when folds are off."""
        fold = self.fold_of(doc_id)
        return self.full if fold is None else self.folds[fold]

    def types(self) -> list[str]:
        return self.full.types()


def build_folded_lexicon(cfg: LexiconConfig, train_docs: Iterable[Document],
                         group: Callable[[Document], str] | None = None) -> FoldedLexicon:
    """:class:`FoldedLexicon` of a config: external lists as the base, ``cfg.folds`` folds over
    ``train_docs`` (their mentions are left out when ``cfg.include_train_mentions`` is false)."""
    builder = builder_from_config(cfg)
    base = builder.build()
    docs = train_docs if cfg.include_train_mentions else ()
    return FoldedLexicon(base, docs, cfg.folds, term_filter=builder.term_filter,
                         type_order=builder.type_order, group=group)
