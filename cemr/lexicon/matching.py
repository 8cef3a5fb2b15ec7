"""Forward, backward and bidirectional maximum matching (FMM, BMM) of a lexicon against a text.

One :meth:`~cemr.lexicon.trie.Matcher.scan` yields, per position, the longest term starting there
(FMM) and the longest term ending there (BMM); :func:`choose_words` then picks FMM or BMM wherever
the two disagree. All offsets are 0-based char offsets; spans are end exclusive.
"""
from __future__ import annotations

from typing import Iterable

from cemr.corpus.document import Span
from cemr.lexicon.lexicon import Lexicon
from cemr.lexicon.trie import Matcher, longest_terms

Word = tuple[int, int, str]  # (start, end, type) of one lexicon-matched segment


def _fmm_words(fwd_end: list[int], fwd_type: list[str | None]) -> list[Word]:
    words: list[Word] = []
    n = len(fwd_end)
    i = 0
    while i < n:
        e = fwd_end[i]
        if e:
            words.append((i, e, fwd_type[i]))  # type: ignore[arg-type]
            i = e
        else:
            i += 1
    return words


def _bmm_words(bwd_start: list[int], bwd_type: list[str | None]) -> list[Word]:
    words: list[Word] = []
    j = len(bwd_start) - 1
    while j > 0:
        s = bwd_start[j]
        if s >= 0:
            words.append((s, j, bwd_type[j]))  # type: ignore[arg-type]
            j = s
        else:
            j -= 1
    words.reverse()
    return words


def _segments(words: list[Word], start: int, end: int) -> list[tuple[int, int]]:
    """The full segmentation of ``[start, end)``: the words plus every other char on its own."""
    out: list[tuple[int, int]] = []
    pos = start
    for s, e, _ in words:
        out.extend((k, k + 1) for k in range(pos, s))
        out.append((s, e))
        pos = e
    out.extend((k, k + 1) for k in range(pos, end))
    return out


def _matcher_of(lex: Lexicon | Matcher) -> Matcher:
    if isinstance(lex, Matcher):
        return lex
    if isinstance(lex, Lexicon):
        return lex.matcher
    raise TypeError(f"expected a Lexicon or Matcher, got {type(lex).__name__}")


def forward_max_match(text: str, lex: Lexicon | Matcher) -> list[tuple[int, int]]:
    """Forward maximum matching: from the left, take the longest lexicon term starting here, else
    one char. Returns the whole segmentation as ``(start, end)`` pairs (end exclusive)."""
    fwd_end, fwd_type, _, _ = _matcher_of(lex).scan(text)
    return _segments(_fmm_words(fwd_end, fwd_type), 0, len(text))


def backward_max_match(text: str, lex: Lexicon | Matcher) -> list[tuple[int, int]]:
    """Backward maximum matching: from the right, take the longest lexicon term ending here, else
    one char. Returns the whole segmentation as ``(start, end)`` pairs, left to right."""
    _, _, bwd_start, bwd_type = _matcher_of(lex).scan(text)
    return _segments(_bmm_words(bwd_start, bwd_type), 0, len(text))


def _score(words: list[Word], length: int) -> tuple[int, int, int]:
    """Rule key of one segmentation of a region of ``length`` chars (smaller is better):
    (number of segments, number of single-char segments, -chars inside lexicon words)."""
    matched = sum(e - s for s, e, _ in words)
    unmatched = length - matched
    singles = unmatched + sum(1 for s, e, _ in words if e - s == 1)
    return len(words) + unmatched, singles, -matched


def choose_words(fmm: list[Word], bmm_: list[Word]) -> list[Word]:
    """Merge FMM and BMM word lists, choosing per disagreement region.

    Overlapping words of the two lists chain into regions ``[lo, hi)`` whose ends are boundaries of
    both segmentations; outside them both segmentations are the same single chars. In each region
    where they differ, the rules in order: (1) fewer segments, (2) fewer single-char segments,
    (3) more chars inside lexicon words; (4) a full tie goes to BMM (customary for Chinese). For a
    text with a single disagreement this is exactly the textbook whole-sentence choice; deciding
    per region keeps one hard sentence from deciding a whole multi-sentence record.
    """
    if fmm == bmm_:
        return fmm
    out: list[Word] = []
    i = j = 0
    nf, nb = len(fmm), len(bmm_)
    while i < nf or j < nb:
        # start a region at the leftmost next word, then absorb every word overlapping it
        if j >= nb or (i < nf and fmm[i][0] <= bmm_[j][0]):
            lo, hi = fmm[i][0], fmm[i][1]
        else:
            lo, hi = bmm_[j][0], bmm_[j][1]
        i0, j0 = i, j
        grown = True
        while grown:
            grown = False
            while i < nf and fmm[i][0] < hi:
                hi = max(hi, fmm[i][1])
                i += 1
                grown = True
            while j < nb and bmm_[j][0] < hi:
                hi = max(hi, bmm_[j][1])
                j += 1
                grown = True
        f_words, b_words = fmm[i0:i], bmm_[j0:j]
        if f_words == b_words or _score(f_words, hi - lo) >= _score(b_words, hi - lo):
            out.extend(b_words)
        else:
            out.extend(f_words)
    return out


def bmm_words(text: str, lex: Lexicon | Matcher) -> list[Word]:
    """Bidirectional maximum matching: the lexicon words ``(start, end, type)`` of the chosen
    segmentation (see :func:`choose_words` for the rules), left to right, non-overlapping."""
    return bmm_words_of_matches(all_words(text, lex), len(text))


def bmm_words_of_matches(matches: list[Word], n: int) -> list[Word]:
    """:func:`bmm_words` of a text of ``n`` chars from its :func:`all_words` (no second trie walk)."""
    fwd_end, fwd_type, bwd_start, bwd_type = longest_terms(matches, n)
    return choose_words(_fmm_words(fwd_end, fwd_type), _bmm_words(bwd_start, bwd_type))


def bmm(text: str, lex: Lexicon | Matcher) -> list[Span]:
    """Bidirectional maximum matching: the lexicon-matched segments as typed spans (end exclusive).

    Chars outside any lexicon word are not returned. FMM vs BMM is decided per disagreement
    region by: fewer segments, then fewer single-char segments, then more matched chars, then BMM.
    """
    return [Span(s, e, t) for s, e, t in bmm_words(text, lex)]


def bmm_tags(text: str, lex: Lexicon | Matcher) -> list[str]:
    """One BIO tag per char of ``text`` from :func:`bmm`: ``B-TYPE``, ``I-TYPE`` or ``O`` (length n)."""
    return words_to_tags(bmm_words(text, lex), len(text))


def words_to_tags(words: Iterable[Word], n: int) -> list[str]:
    """BIO tags (length ``n``) of non-overlapping ``words``: ``B-TYPE``, ``I-TYPE``, else ``O``."""
    tags = ["O"] * n
    for s, e, t in words:
        tags[s] = "B-" + t
        if e - s > 1:
            tags[s + 1:e] = ["I-" + t] * (e - s - 1)
    return tags


def all_words(text: str, lex: Lexicon | Matcher) -> list[Word]:
    """Every lexicon word occurring in ``text``, nested and overlapping ones included (not only the
    BMM segmentation): ``(start, end, type)``, ordered by start then end."""
    return _matcher_of(lex).all_matches(text)


def bio_labels(types: Iterable[str]) -> list[str]:
    """The tag vocabulary of :func:`bmm_tags` for these types: ``["O", "B-T1", "I-T1", ...]``, sorted
    by type, so a feature embedding can fix its indices before any text is seen."""
    out = ["O"]
    for t in sorted(set(types)):
        out += ["B-" + t, "I-" + t]
    return out
