"""The trie over a lexicon's terms and its one-pass scan for the longest terms at every position."""
from __future__ import annotations

from typing import Iterable, Sequence

# A trie node is a tuple ``(children, term_id)``: ``children`` maps a char to the next node,
# ``term_id`` is the index of the term ending at this node, or -1. Leaves share one empty dict.
_NO_CHILDREN: dict = {}


class TermIndex:
    """A trie over a fixed list of distinct terms; ``terms[i]`` has term id ``i``.

    The trie carries no types: a :class:`Matcher` pairs it with a table ``term id -> type or None``,
    so several lexicons over the same terms (the folds) share one trie.
    """

    def __init__(self, terms: Iterable[str]):
        self.terms: list[str] = list(terms)
        build: dict = {}
        for tid, term in enumerate(self.terms):
            if not term:
                raise ValueError("TermIndex: empty term")
            node = build
            for ch in term:
                node = node.setdefault(ch, {})
            if None in node:
                raise ValueError(f"TermIndex: duplicate term {term!r}")
            node[None] = tid
        self.root: dict[str, tuple[dict, int]] = self._freeze(build)
        self.max_length = max((len(t) for t in self.terms), default=0)

    @classmethod
    def _freeze(cls, build: dict) -> dict:
        out = {}
        for ch, child in build.items():
            if ch is None:
                continue
            tid = child.get(None, -1)
            has_children = len(child) > (1 if tid >= 0 else 0)
            out[ch] = (cls._freeze(child) if has_children else _NO_CHILDREN, tid)
        return out


class Matcher:
    """A :class:`TermIndex` plus a table ``term id -> type`` (None: the term is switched off)."""

    def __init__(self, index: TermIndex, types: Sequence[str | None]):
        if len(types) != len(index.terms):
            raise ValueError(f"Matcher: {len(types)} types for {len(index.terms)} terms")
        self.index = index
        self.types = list(types)

    def scan(self, text: str) -> tuple[list[int], list[str | None], list[int], list[str | None]]:
        """Walk the trie from every position of ``text`` (``n`` chars) in one pass.

        Returns four lists: ``fwd_end[i]`` the end of the longest term starting at ``i`` (0 when
        none) and ``fwd_type[i]`` its type (length ``n``); ``bwd_start[j]`` the start of the
        longest term ending at ``j`` (-1 when none) and ``bwd_type[j]`` its type (length ``n+1``).
        """
        return longest_terms(self.all_matches(text), len(text))

    def all_matches(self, text: str) -> list[tuple[int, int, str]]:
        """Every occurrence of every (switched-on) term in ``text``: ``(start, end, type)``, end
        exclusive, ordered by start then end; nested and overlapping occurrences all included."""
        n = len(text)
        types = self.types
        out: list[tuple[int, int, str]] = []
        root_get = self.index.root.get
        for i in range(n):
            entry = root_get(text[i])
            j = i
            while entry is not None:
                children, tid = entry
                j += 1
                if tid >= 0 and types[tid] is not None:
                    out.append((i, j, types[tid]))  # type: ignore[arg-type]
                if j == n:
                    break
                entry = children.get(text[j])
        return out


def longest_terms(matches: Sequence[tuple[int, int, str]], n: int
                  ) -> tuple[list[int], list[str | None], list[int], list[str | None]]:
    """The four lists of :meth:`Matcher.scan` from :meth:`Matcher.all_matches` output for a text of
    ``n`` chars (so a caller that needs both walks the trie once)."""
    fwd_end = [0] * n
    fwd_type: list[str | None] = [None] * n
    bwd_start = [-1] * (n + 1)
    bwd_type: list[str | None] = [None] * (n + 1)
    for i, j, type_ in matches:  # by start, then end: the last end of i is its longest
        fwd_end[i] = j
        fwd_type[i] = type_
        if bwd_start[j] < 0:  # i grows: the first start found is the longest term
            bwd_start[j] = i
            bwd_type[j] = type_
    return fwd_end, fwd_type, bwd_start, bwd_type
