"""BIO tags: spans <-> per-character tags, and the label set of a tagger.

A tag is ``"O"`` (outside), ``"B-<type>"`` (first character of a mention) or ``"I-<type>"`` (any
later character). Spans are the end-exclusive :class:`~cemr.corpus.document.Span` of the corpus
model, with offsets into the tagged sequence (one tag per character).

``spans_to_bio`` is strict (overlapping spans cannot be written as BIO and raise);
``bio_to_spans`` is lenient, because it also reads unconstrained model output: an ``I-X`` that does
not continue an ``X`` mention starts a new one. :meth:`LabelSet.allowed_transitions` gives the
matrix that keeps a CRF from producing such sequences in the first place.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cemr.corpus.document import Span

OUTSIDE = "O"
BEGIN = "B-"
INSIDE = "I-"


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into ``(prefix, type)``: ``"O" -> ("O", None)``, ``"B-X" -> ("B", "X")``.

    Raises ``ValueError`` for anything else (``"B-"``, ``"E-X"``, ``"x"``, non-strings).
    """
    if tag == OUTSIDE:
        return OUTSIDE, None
    if isinstance(tag, str) and len(tag) > 2 and tag[:2] in (BEGIN, INSIDE):
        return tag[0], tag[2:]
    raise ValueError(f"not a BIO tag: {tag!r} (expected 'O', 'B-<type>' or 'I-<type>')")


def spans_to_bio(length: int, spans: Iterable[Span]) -> list[str]:
    """Tag a sequence of ``length`` characters with ``spans`` (end exclusive).

    Raises ``ValueError`` when a span lies outside ``[0, length)``, has an empty type, or overlaps
    another span (BIO cannot express nested or overlapping mentions; resolve them before tagging).
    """
    if length < 0:
        raise ValueError(f"negative sequence length {length}")
    tags = [OUTSIDE] * length
    owner: list[Span | None] = [None] * length
    for span in spans:
        if not span.type:
            raise ValueError(f"span {span} has an empty type")
        if span.end > length:
            raise ValueError(f"span {span} ends past the sequence length {length}")
        for i in range(span.start, span.end):
            if owner[i] is not None:
                raise ValueError(f"span {span} overlaps span {owner[i]} at position {i}")
            owner[i] = span
        tags[span.start] = BEGIN + span.type
        for i in range(span.start + 1, span.end):
            tags[i] = INSIDE + span.type
    return tags


def bio_to_spans(tags: Sequence[str]) -> list[Span]:
    """Read the mentions of a BIO tag sequence, sorted by position.

    Lenient: ``I-X`` after ``O`` (or at the start) begins an ``X`` mention, and ``I-X`` after a
    ``Y`` mention (``Y != X``) ends that one and begins an ``X`` mention. ``B-X`` always begins a
    new mention. Malformed tags raise ``ValueError`` naming the position.
    """
    spans: list[Span] = []
    start: int | None = None
    current: str | None = None
    for i, tag in enumerate(tags):
        try:
            prefix, typ = parse_tag(tag)
        except ValueError as err:
            raise ValueError(f"position {i}: {err}") from None
        continues = prefix == "I" and typ == current
        if start is not None and not continues:
            spans.append(Span(start, i, current))
            start, current = None, None
        if prefix != OUTSIDE and not continues:
            start, current = i, typ
    if start is not None:
        spans.append(Span(start, len(tags), current))
    return spans


class LabelSet:
    """The ordered tag inventory of a tagger: ``"O"`` first, then ``B-X``, ``I-X`` per type.

    ``LabelSet.from_types`` sorts the types, so the same types always give the same ids; a saved
    list (:meth:`to_list`) is restored as is by :meth:`from_list`, whatever its type order.
    """

    def __init__(self, types: Sequence[str]):
        types = list(types)
        for t in types:
            if not isinstance(t, str) or not t:
                raise ValueError(f"entity type must be a non-empty string, got {t!r}")
        dup = sorted({t for t in types if types.count(t) > 1})
        if dup:
            raise ValueError(f"duplicate entity types {dup}")
        self._types = tuple(types)
        self._tags = [OUTSIDE] + [p + t for t in types for p in (BEGIN, INSIDE)]
        self._index = {tag: i for i, tag in enumerate(self._tags)}

    @classmethod
    def from_types(cls, types: Iterable[str]) -> "LabelSet":
        """Label set of the distinct ``types``, sorted."""
        return cls(sorted(set(types)))

    @classmethod
    def from_list(cls, tags: Sequence[str]) -> "LabelSet":
        """Restore a label set saved with :meth:`to_list` (ids unchanged).

        Raises ``ValueError`` unless ``tags`` is ``["O", "B-X", "I-X", "B-Y", "I-Y", ...]``.
        """
        tags = list(tags)
        if not tags or tags[0] != OUTSIDE:
            raise ValueError(f"a saved label list must start with 'O', got {tags[:1]}")
        if len(tags) % 2 != 1:
            raise ValueError(f"a saved label list has 'O' then B-/I- pairs, got {len(tags)} tags")
        types = []
        for k in range(1, len(tags), 2):
            b, i = tags[k], tags[k + 1]
            pb, tb = parse_tag(b)
            pi, ti = parse_tag(i)
            if pb != "B" or pi != "I" or tb != ti:
                raise ValueError(f"tags {k} and {k + 1} must be 'B-X', 'I-X', got {b!r}, {i!r}")
            types.append(tb)
        return cls(types)

    def to_list(self) -> list[str]:
        """The tags in id order (JSON-friendly)."""
        return list(self._tags)

    @property
    def types(self) -> tuple[str, ...]:
        return self._types

    @property
    def num_tags(self) -> int:
        return len(self._tags)

    def __len__(self) -> int:
        return len(self._tags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self._tags == other._tags

    def __hash__(self) -> int:
        return hash(tuple(self._tags))

    def __repr__(self) -> str:
        return f"LabelSet(types={list(self._types)})"

    def index(self, tag: str) -> int:
        """Id of one tag; ``ValueError`` names the unknown tag and the known types."""
        try:
            return self._index[tag]
        except KeyError:
            raise ValueError(f"unknown tag {tag!r}; known types: {list(self._types)}") from None

    def to_ids(self, tags: Sequence[str]) -> list[int]:
        """Tag strings -> ids; an unknown tag raises ``ValueError`` naming it and its position."""
        ids = []
        for pos, tag in enumerate(tags):
            i = self._index.get(tag)
            if i is None:
                raise ValueError(
                    f"unknown tag {tag!r} at position {pos}; known types: {list(self._types)}"
                )
            ids.append(i)
        return ids

    def from_ids(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tag strings; an id outside ``[0, num_tags)`` raises ``ValueError``."""
        out = []
        n = len(self._tags)
        for pos, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"tag id {i} at position {pos} outside [0, {n})")
            out.append(self._tags[i])
        return out

    def allowed_transitions(self) -> np.ndarray:
        """Bool matrix ``(num_tags, num_tags)``: ``[i, j]`` is True when tag j may follow tag i.

        Anything may be followed by ``O`` or ``B-X``; ``I-X`` may only follow ``B-X`` or ``I-X``.
        For a CRF: ``transitions.masked_fill(~torch.from_numpy(m), -1e4)``.
        """
        n = len(self._tags)
        allowed = np.ones((n, n), dtype=bool)
        for j, tag in enumerate(self._tags):
            prefix, typ = parse_tag(tag)
            if prefix == "I":
                allowed[:, j] = False
                allowed[self._index[BEGIN + typ], j] = True
                allowed[j, j] = True
        return allowed

    def allowed_start(self) -> np.ndarray:
        """Bool vector ``(num_tags,)``: True for tags that may begin a sequence (not ``I-X``)."""
        return np.array([not t.startswith(INSIDE) for t in self._tags], dtype=bool)


def bio_id_spans(tag_ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bio_to_spans` for a whole batch of tag ids in :class:`LabelSet` layout (``0`` =
    ``O``, ``2i + 1`` = ``B-<type i>``, ``2i + 2`` = ``I-<type i>``), on numpy arrays.

    ``tag_ids (B, T)`` int, ``lengths (B,)``: positions at or past a row's length are ignored.
    Returns ``(row, start, end, type_index)``, each ``(N,)`` int64, sorted by row then start;
    the same (lenient) reading as :func:`bio_to_spans`: an ``I-X`` continues a mention only after
    ``B-X`` / ``I-X``, otherwise it begins one. Negative ids or ids without a tag raise later in
    the caller's label lookup; here only the layout above is assumed.
    """
    tag_ids = np.asarray(tag_ids, dtype=np.int64)
    b, t_len = tag_ids.shape
    valid = np.arange(t_len)[None, :] < np.asarray(lengths)[:, None]  # (B, T)
    typ = np.where(valid & (tag_ids > 0), (tag_ids - 1) // 2, -1)  # (B, T) type index, -1 outside
    inside = (tag_ids % 2 == 0) & (typ >= 0)  # (B, T) I- tags
    cont = np.zeros_like(inside)
    cont[:, 1:] = inside[:, 1:] & (typ[:, 1:] == typ[:, :-1])  # continues the mention before it
    begins = (typ >= 0) & ~cont  # (B, T)
    flat_begin = np.flatnonzero(begins)
    breaks = np.flatnonzero(~cont.ravel())  # a mention ends at the first position not continuing it
    breaks = np.append(breaks, b * t_len)
    ends = breaks[np.searchsorted(breaks, flat_begin, side="right")]
    row, start = np.divmod(flat_begin, t_len)
    return row, start, ends - row * t_len, typ.ravel()[flat_begin]
