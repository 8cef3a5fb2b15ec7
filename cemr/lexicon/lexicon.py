"""The lexicon: an immutable mapping ``term -> entity type``, its TSV file and its trie matcher."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping

from cemr.corpus.document import CorpusError
from cemr.lexicon.accounting import LexiconReport
from cemr.lexicon.files import read_lines
from cemr.lexicon.trie import Matcher, TermIndex
from cemr.lexicon.voting import Votes

_HEADER = "# cemr lexicon: term<TAB>type, UTF-8, sorted by term"


class Lexicon:
    """An immutable mapping ``term -> entity type`` with a trie matcher built on first use.

    ``votes`` (``term -> {type: count}``) is kept when the lexicon was built from votes, so
    out-of-fold variants can recombine them (:class:`~cemr.lexicon.folds.FoldedLexicon`);
    ``report`` says how it was built. Build one with :func:`~cemr.lexicon.builder.build_lexicon`,
    :class:`~cemr.lexicon.builder.LexiconBuilder`, ``Lexicon(dict)`` or :meth:`load`.
    """

    def __init__(self, terms: Mapping[str, str], *, votes: Votes | None = None,
                 report: LexiconReport | None = None, matcher: Matcher | None = None):
        for term, type_ in terms.items():
            if not term or not type_:
                raise ValueError(f"Lexicon: empty term or type in ({term!r}, {type_!r})")
        self._terms = dict(terms)
        self.votes = votes
        self.report = report
        self._matcher = matcher

    def __getstate__(self) -> dict[str, Any]:
        # the trie is rebuilt on first use after unpickling: faster than unpickling it (0.65 s vs
        # 1.8 s for the 38k-term ccks2017 preset) and 4 MB less to ship to a worker
        state = dict(self.__dict__)
        state["_matcher"] = None
        return state

    # mapping-like access
    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return term in self._terms

    def __getitem__(self, term: str) -> str:
        return self._terms[term]

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms)

    def get(self, term: str, default: str | None = None) -> str | None:
        return self._terms.get(term, default)

    def items(self) -> Iterable[tuple[str, str]]:
        return self._terms.items()

    def types(self) -> list[str]:
        return sorted(set(self._terms.values()))

    def type_counts(self) -> Counter:
        return Counter(self._terms.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lexicon) and self._terms == other._terms

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} terms, types={dict(sorted(self.type_counts().items()))})"

    @property
    def matcher(self) -> Matcher:
        if self._matcher is None:
            index = TermIndex(sorted(self._terms))
            self._matcher = Matcher(index, [self._terms[t] for t in index.terms])
        return self._matcher

    def attach_matcher(self, index: TermIndex) -> None:
        """Match over ``index`` (a trie shared with other lexicons) instead of an own trie; terms
        of ``index`` this lexicon lacks are switched off."""
        self._matcher = Matcher(index, [self._terms.get(t) for t in index.terms])

    # persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write ``term<TAB>type`` lines sorted by term, after one ``#`` header line (UTF-8)."""
        lines = [f"{_HEADER}; {len(self)} terms"]
        for term in sorted(self._terms):
            type_ = self._terms[term]
            if any(c in term + type_ for c in "\t\r\n") or term.startswith("#"):
                raise ValueError(f"Lexicon.save: term {term!r} / type {type_!r} cannot be written as TSV")
            lines.append(f"{term}\t{type_}")
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        """Read a file written by :meth:`save`; a bad line raises CorpusError (file, line, problem)."""
        path = str(path)
        terms: dict[str, str] = {}
        for lineno, line in enumerate(read_lines(path), start=1):
            if line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise CorpusError(path, lineno, f"expected 'term<TAB>type', got {line[:60]!r}")
            term, type_ = parts
            if term in terms:
                raise CorpusError(path, lineno, f"duplicate term {term!r}")
            terms[term] = type_
        return cls(terms)
