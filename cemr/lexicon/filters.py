"""The noise filter every candidate lexicon term passes (list entries and training mentions alike)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Iterable

from cemr.config import LexiconConfig

# Stripped from both ends of every candidate term: ASCII/Unicode whitespace, the BOM, NBSP.
STRIP_CHARS = " \t\r\n\f\v\u3000\u00a0\ufeff\u200b"


def is_digit_or_punct(term: str) -> bool:
    """True when every char is a number, punctuation or symbol (Unicode categories N*, P*, S*)."""
    return all(unicodedata.category(c)[0] in "NPS" for c in term)


@dataclass(frozen=True)
class TermFilter:
    """The noise filter every candidate term passes (list entries and training mentions alike).

    Rejection reasons, checked in this order: ``empty`` (nothing left after stripping
    whitespace), ``whitespace`` (whitespace inside the term), ``too_short`` (< ``min_length``
    chars), ``too_long`` (> ``max_length`` chars), ``stopword`` (exactly one of ``stopwords``),
    ``digits_punct`` (only digits, punctuation and symbols, e.g. ``"12.5"``, ``"（）"``).
    """

    min_length: int = 2
    max_length: int = 30
    stopwords: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ValueError(
                f"lexicon term lengths: need 1 <= min_length <= max_length, got "
                f"min_length={self.min_length}, max_length={self.max_length}"
            )

    @classmethod
    def from_config(cls, cfg: LexiconConfig, extra_stopwords: Iterable[str] = ()) -> "TermFilter":
        return cls(cfg.min_length, cfg.max_length, frozenset(cfg.stopwords) | frozenset(extra_stopwords))

    def clean(self, raw: str) -> tuple[str, str | None]:
        """``(term, None)`` for a kept term (surrounding whitespace stripped), else ``(term, reason)``."""
        term = raw.strip(STRIP_CHARS)
        if not term:
            return term, "empty"
        if any(c.isspace() for c in term):
            return term, "whitespace"
        if len(term) < self.min_length:
            return term, "too_short"
        if len(term) > self.max_length:
            return term, "too_long"
        if term in self.stopwords:
            return term, "stopword"
        if is_digit_or_punct(term):
            return term, "digits_punct"
        return term, None
