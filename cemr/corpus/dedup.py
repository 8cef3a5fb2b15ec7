"""Exact and near-duplicate detection for texts, streaming (one text at a time).

Pipeline for every text given to :meth:`Deduper.add`:

1. :func:`normalize`: Unicode NFKC (full-width letters, digits and punctuation become half-width,
   the ideographic space becomes a space), case folded, every whitespace and format character
   (zero-width space, BOM, ...) removed.  Two texts that differ only in these respects are exact
   duplicates.
2. **exact**: a 128-bit BLAKE2b hash of the normalised text, looked up in a dict.
3. **near**: the set of character n-grams (``ngram=5``) of the normalised text (a text shorter
   than ``ngram`` is one shingle: itself) is summarised by a MinHash signature of ``num_perm=64``
   values (numpy: 32-bit multiply-add permutations of mixed 64-bit n-gram hashes; see
   :class:`MinHasher`).  The signature is cut
   into LSH bands (``bands`` x ``rows``, chosen by :func:`choose_bands` for the threshold); texts
   sharing a band bucket are candidates.  Each candidate pair is **verified exactly**: the Jaccard
   similarity of the two n-gram (hash) sets must be ``>= threshold`` (default 0.9).  The most
   similar verified candidate (earliest added on ties) is reported.

Texts registered with :meth:`Deduper.seed` (dev/test documents, say) are references: a text that
duplicates one (exactly or nearly) is rejected with the reference's reason (``"leakage"`` by
default); references are never rejected themselves.  Only kept texts enter the index, so memory
grows with the number of kept texts (their normalised text plus the band keys).

Everything is deterministic: no Python ``hash()`` of strings is used for results.
"""
from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

EXACT = "exact"
NEAR = "near"
EMPTY = "empty"
LEAKAGE = "leakage"

_MASK64 = (1 << 64) - 1
_PRIME_MUL = np.uint64(0x100000001B3)  # FNV-style multiplier for the rolling n-gram hash


@functools.cache
def _format_deletions() -> dict[int, None]:
    """``str.translate`` table deleting every format (Cf) character (built once, when needed)."""
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}


def normalize(text: str) -> str:
    """NFKC, casefold, and drop whitespace and format (Cf) characters.

    >>> normalize("患者 ＡＢＣ１２\\u3000发热\\u200b。")
    '患者abc12发热。'
    """
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    text = "".join(text.casefold().split())
    if not text.isprintable():  # Cf characters are not printable: only then scan for them
        text = text.translate(_format_deletions())
    return text


def text_digest(normalized: str) -> bytes:
    """128-bit BLAKE2b digest of an (already normalised) text: the exact-duplicate key."""
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).digest()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Finaliser of SplitMix64 applied element-wise to a uint64 array (wrap-around arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ngram_hashes(normalized: str, ngram: int) -> np.ndarray:
    """64-bit hashes of the char n-grams of ``normalized``, in text order, repeats kept: (S,)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    if not normalized:
        return np.empty(0, dtype=np.uint64)
    codes = np.frombuffer(normalized.encode("utf-32-le"), dtype="<u4").astype(np.uint64)  # (L,)
    n = min(ngram, len(codes))
    count = len(codes) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        h = h * _PRIME_MUL + codes[k : k + count]
    # mix in the n-gram length so short texts never collide with n-grams of longer ones
    return _splitmix64(h ^ np.uint64(n))


def shingles(normalized: str, ngram: int = 5) -> np.ndarray:
    """Sorted unique 64-bit hashes of the char n-grams of ``normalized``: shape ``(S,)`` uint64.

    A text shorter than ``ngram`` (but not empty) gives one shingle, the whole text; an empty text
    gives an empty array.
    """
    return np.unique(_ngram_hashes(normalized, ngram))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique uint64 arrays (1.0 for two empty sets)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(two texts with this Jaccard similarity share at least one LSH band bucket)."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def choose_bands(threshold: float, num_perm: int, min_recall: float = 0.98) -> tuple[int, int]:
    """``(bands, rows)``: the most rows per band (fewest false candidates) such that a pair at
    exactly the threshold similarity still becomes a candidate with probability ``>= min_recall``.

    False candidates only cost an exact verification, missed ones cost a duplicate, hence the
    recall floor. For ``threshold=0.9, num_perm=64`` this gives ``(8, 8)`` (recall 0.989 at 0.9,
    0.03 at 0.5).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= min_recall:
            return bands, rows
    return num_perm, 1


class MinHasher:
    """MinHash signatures of n-gram sets: ``signature(hashes (S,) uint64) -> (num_perm,) uint32``.

    Permutation ``k`` maps the top 32 bits ``x`` of a (well mixed) n-gram hash to
    ``a_k * x + b_k mod 2**32`` with odd ``a_k``: a bijection of 32-bit values. 32-bit arithmetic
    halves the memory traffic of the ``(S, num_perm)`` product; two n-grams sharing their top 32
    hash bits (probability ~S**2 / 2**33) only blur the estimate, never the exact verification.
    """

    def __init__(self, num_perm: int = 64, seed: int = 1):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self._a = (rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2)
                   + np.uint32(1))
        self._b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """Shape ``(num_perm,)`` uint32: per permutation the minimum permuted n-gram hash.

        ``hashes`` (shape ``(S,)`` uint64) may hold repeats: they do not change a minimum.
        """
        if len(hashes) == 0:
            return np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        x = (hashes >> np.uint64(32)).astype(np.uint32)  # (S,)
        permuted = np.multiply.outer(x, self._a)  # (S, num_perm), wraps mod 2**32
        permuted += self._b
        return permuted.min(axis=0)


class DedupResult(NamedTuple):
    """Outcome of :meth:`Deduper.add`: unpack as ``kept, reason, duplicate_of``."""

    kept: bool
    reason: str | None  # None when kept; "empty", "exact", "near" or a reference's reason
    duplicate_of: Hashable | None


@dataclass
class _Entry:
    key: Hashable
    normalized: str
    reason: str | None  # None for a kept text, the rejection reason for a reference


class Deduper:
    """Streaming exact + near-duplicate filter (see the module docstring).

    ``counts`` tallies the outcomes: ``kept``, ``empty``, ``exact``, ``near`` and, for references,
    ``<reason>_exact`` / ``<reason>_near`` (e.g. ``leakage_near``); ``references`` counts seeds.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        ngram: int = 5,
        num_perm: int = 64,
        bands: int | None = None,
        near: bool = True,
        seed: int = 1,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.threshold = threshold
        self.ngram = ngram
        self.near = near
        self.hasher = MinHasher(num_perm, seed)
        if bands is None:
            self.bands, self.rows = choose_bands(threshold, num_perm)
        else:
            if not 1 <= bands <= num_perm:
                raise ValueError(f"bands must be in [1, num_perm={num_perm}], got {bands}")
            self.bands, self.rows = bands, num_perm // bands
        self._entries: list[_Entry] = []
        self._exact: dict[bytes, int] = {}
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.counts: Counter = Counter()

    def __len__(self) -> int:
        """Number of indexed texts (kept texts plus references)."""
        return len(self._entries)

    # ------------------------------------------------------------------------------------------
    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        r = self.rows
        return [sig[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]

    def _find(self, norm: str, digest: bytes) -> tuple[str | None, int | None, list[bytes] | None]:
        """``(kind, entry index, band keys)``: kind is "exact", "near" or None (no duplicate)."""
        idx = self._exact.get(digest)
        if idx is not None:
            return EXACT, idx, None
        if not self.near:
            return None, None, None
        hashes = _ngram_hashes(norm, self.ngram)  # repeats do not change a MinHash
        keys = self._band_keys(self.hasher.signature(hashes))
        candidates: dict[int, None] = {}
        for table, key in zip(self._buckets, keys):
            for i in table.get(key, ()):
                candidates[i] = None
        best, best_sim = None, -1.0
        sh = np.unique(hashes) if candidates else hashes
        for i in sorted(candidates):
            sim = jaccard(sh, shingles(self._entries[i].normalized, self.ngram))
            if sim >= self.threshold and sim > best_sim:
                best, best_sim = i, sim
        if best is not None:
            return NEAR, best, keys
        return None, None, keys

    def _insert(self, entry: _Entry, norm: str, digest: bytes, keys: list[bytes] | None) -> None:
        idx = len(self._entries)
        self._entries.append(entry)
        self._exact.setdefault(digest, idx)
        if self.near:
            if keys is None:
                keys = self._band_keys(self.hasher.signature(_ngram_hashes(norm, self.ngram)))
            for table, key in zip(self._buckets, keys):
                table.setdefault(key, []).append(idx)

    # ------------------------------------------------------------------------------------------
    def seed(self, references: Iterable[str | tuple[Hashable, str]], *,
             reason: str = LEAKAGE) -> int:
        """Register reference texts; later texts duplicating one are rejected with ``reason``.

        Items are ``(key, text)`` pairs or bare texts (key: ``(reason, running index)``).
        References are indexed even when they duplicate each other; an empty one (after
        normalisation) is skipped. Returns how many were added.
        """
        if reason in (None, EXACT, NEAR, EMPTY):
            raise ValueError(f"reference reason must be a new label, got {reason!r}")
        added = 0
        for item in references:
            if isinstance(item, str):
                key, text = (reason, self.counts["references"]), item
            else:
                key, text = item
            norm = normalize(text)
            if not norm:
                continue
            self._insert(_Entry(key, norm, reason), norm, text_digest(norm), None)
            self.counts["references"] += 1
            added += 1
        return added

    def check(self, text: str) -> DedupResult:
        """What :meth:`add` would answer for ``text``, without indexing it."""
        norm = normalize(text)
        if not norm:
            return DedupResult(False, EMPTY, None)
        kind, idx, _ = self._find(norm, text_digest(norm))
        if kind is None:
            return DedupResult(True, None, None)
        entry = self._entries[idx]
        return DedupResult(False, entry.reason or kind, entry.key)

    def add(self, key: Hashable, text: str) -> DedupResult:
        """Index ``text`` under ``key`` unless it is empty or duplicates an indexed text."""
        norm = normalize(text)
        if not norm:
            self.counts[EMPTY] += 1
            return DedupResult(False, EMPTY, None)
        digest = text_digest(norm)
        kind, idx, keys = self._find(norm, digest)
        if kind is None:
            self._insert(_Entry(key, norm, None), norm, digest, keys)
            self.counts["kept"] += 1
            return DedupResult(True, None, None)
        entry = self._entries[idx]
        if entry.reason is None:
            self.counts[kind] += 1
            return DedupResult(False, kind, entry.key)
        self.counts[f"{entry.reason}_{kind}"] += 1
        return DedupResult(False, entry.reason, entry.key)
