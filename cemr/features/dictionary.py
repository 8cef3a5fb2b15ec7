"""The dictionary feature ``h_w``: each char's BMM lexicon tag (``B-X`` / ``I-X`` / ``O``) embedded.

Bidirectional maximum matching (:func:`cemr.lexicon.bmm_tags`) tags every char of a sentence with
the lexicon's view of it; :class:`DictionaryFeature` embeds those tags into ``dim`` (50) dims.

The measured pitfall (``docs/method.md``): a lexicon holding every training mention marks every
gold entity of a training sentence, the tagger learns to trust it, and on new text, where most
entities are not in the lexicon, it does worse than without the feature. Two defences, used
together: the caller matches a training sentence against a lexicon built without its own
document's mentions (``FoldedLexicon.for_doc``, chosen by the collator in :mod:`cemr.tagger`),
and this module's *feature dropout* replaces random chars' tags by ``O`` during training
(``p`` = ``model.dictionary.dropout``), so the tagger must also read the text itself.

*Match sets* (``model.dictionary.match_sets``, soft-lexicon style, after Ma et al. 2020, with types
in place of word vectors): BMM keeps one segmentation, so a term nested in a longer one, or one
that lost an FMM/BMM disagreement, never reaches the tagger. With match sets on, every char also
gets the set of *all* lexicon terms covering it, as a multi-hot vector over (begin, middle, end of
a multi-char term; a single-char term) x type (:func:`match_sets_for`), projected linearly to
``dim`` and added to the tag embedding. The same lexicon view is used (out-of-fold in training) and
the same feature dropout removes a char's tag and its set together.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from cemr.tags import BEGIN, INSIDE, OUTSIDE, parse_tag

PAD_TAG = "<pad>"
DICT_PAD_ID = 0
DICT_O_ID = 1
SET_KINDS = ("B", "M", "E", "S")  # begin / middle / end of a multi-char term; a single-char term


class DictionaryTags:
    """Vocabulary of dictionary tags: ``<pad>`` = 0, ``O`` = 1, then ``B-X``, ``I-X`` per type."""

    def __init__(self, types: Sequence[str]):
        types = list(types)
        if len(set(types)) != len(types) or any(not isinstance(t, str) or not t for t in types):
            raise ValueError(f"dictionary types must be distinct non-empty strings, got {types!r}")
        self.types: tuple[str, ...] = tuple(types)
        self.tags: list[str] = [PAD_TAG, OUTSIDE] + [p + t for t in types for p in (BEGIN, INSIDE)]
        self._index = {t: i for i, t in enumerate(self.tags)}
        self._type_index = {t: i for i, t in enumerate(self.types)}

    def __len__(self) -> int:
        return len(self.tags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DictionaryTags) and self.tags == other.tags

    def __repr__(self) -> str:
        return f"DictionaryTags(types={list(self.types)})"

    @property
    def set_size(self) -> int:
        """Width of a char's match-set vector: one slot per (kind in :data:`SET_KINDS`, type)."""
        return len(SET_KINDS) * len(self.types)

    def set_slots(self, words: Sequence[tuple[int, int, str]], n: int) -> list[list[int]]:
        """Per char of a text of ``n`` chars, the sorted match-set slots of the lexicon ``words``
        ``(start, end, type)`` covering it (slot = kind index * number of types + type index)."""
        type_index = self._type_index
        nt = len(self.types)
        slots: list[set[int]] = [set() for _ in range(n)]
        for s, e, t in words:
            k = type_index.get(t)
            if k is None:
                raise ValueError(f"lexicon term at chars {s}-{e} has type {t!r}, not in the dictionary "
                                 f"feature's types {list(self.types)} (build the feature with the lexicon's types)")
            if not 0 <= s < e <= n:
                raise ValueError(f"lexicon term at chars {s}-{e} does not fit a text of {n} chars")
            if e - s == 1:
                slots[s].add(3 * nt + k)
                continue
            slots[s].add(k)
            for c in range(s + 1, e - 1):
                slots[c].add(nt + k)
            slots[e - 1].add(2 * nt + k)
        return [sorted(x) for x in slots]

    def encode(self, tags: Sequence[str]) -> list[int]:
        """Tag strings -> ids; a type the vocabulary lacks raises ``ValueError`` naming it."""
        out = []
        for pos, tag in enumerate(tags):
            i = self._index.get(tag)
            if i is None or i == DICT_PAD_ID:
                parse_tag(tag)  # malformed tags get the BIO parser's message
                raise ValueError(
                    f"dictionary tag {tag!r} at position {pos}: type not in the dictionary feature's "
                    f"types {list(self.types)} (build the feature with the lexicon's types)"
                )
            out.append(i)
        return out


def tags_for(text: str, lexicon) -> list[str]:
    """BMM dictionary tags of ``text`` (one per char) against ``lexicon``; all ``O`` when None."""
    if lexicon is None:
        return [OUTSIDE] * len(text)
    from cemr.lexicon import bmm_tags  # local: the feature module stays importable on its own

    tags = bmm_tags(text, lexicon)
    if len(tags) != len(text):
        raise ValueError(f"bmm_tags returned {len(tags)} tags for a text of {len(text)} chars")
    return tags


def match_sets_for(text: str, lexicon, vocab: DictionaryTags) -> list[list[int]]:
    """Match-set slots per char of ``text`` (:meth:`DictionaryTags.set_slots`) from every
    occurrence of every term of ``lexicon``; all empty when ``lexicon`` is None."""
    if lexicon is None:
        return [[] for _ in text]
    from cemr.lexicon import all_words  # local: the feature module stays importable on its own

    return vocab.set_slots(all_words(text, lexicon), len(text))


def tags_and_sets_for(text: str, lexicon, vocab: DictionaryTags) -> tuple[list[str], list[list[int]]]:
    """:func:`tags_for` and :func:`match_sets_for` of ``text`` from one trie walk (the BMM tags are
    chosen among the same matches the sets list)."""
    n = len(text)
    if lexicon is None:
        return [OUTSIDE] * n, [[] for _ in range(n)]
    from cemr.lexicon import all_words, bmm_words_of_matches, words_to_tags  # local, as in tags_for

    words = all_words(text, lexicon)
    return words_to_tags(bmm_words_of_matches(words, n), n), vocab.set_slots(words, n)


def sets_tensor(rows: Sequence[Sequence[Sequence[int]]], t: int, width: int) -> Tensor:
    """``(B, T, width)`` float multi-hot of per-sentence, per-char slot lists (0 at padding)."""
    out = torch.zeros(len(rows), t, width)
    idx = [(b, c, k) for b, row in enumerate(rows) for c, slots in enumerate(row) for k in slots]
    if idx:
        i = torch.tensor(idx, dtype=torch.long)
        out[i[:, 0], i[:, 1], i[:, 2]] = 1.0
    return out


def _check_rate(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dictionary feature dropout must be in [0, 1], got {p}")


def drop_mask(ids: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``(B, T)`` bool: the chars of ``ids (B, T)`` feature dropout hits, each with prob ``p``."""
    _check_rate(p)
    return torch.rand(ids.shape, generator=generator, device=ids.device) < p


def drop_tags(ids: Tensor, p: float, generator: torch.Generator | None = None,
              drop: Tensor | None = None) -> Tensor:
    """Feature dropout: each non-pad, non-``O`` tag id of ``ids (B, T)`` becomes ``O`` with prob ``p``
    (at the chars of ``drop``, a :func:`drop_mask`, when given)."""
    if drop is None:
        _check_rate(p)
        if p == 0.0:
            return ids
        drop = drop_mask(ids, p, generator)
    return ids.masked_fill(drop & (ids > DICT_O_ID), DICT_O_ID)


class DictionaryFeature(nn.Module):
    """Embeds dictionary tag ids ``(B, T)`` into ``(B, T, dim)``; feature dropout while training.

    ``types``: the entity types the lexicon can produce; ``dropout``: probability of replacing a
    char's lexicon tag by ``O`` in training mode (never at inference). ``match_sets``: also take
    each char's match-set vector ``(B, T, vocab.set_size)`` and add its linear projection.
    """

    def __init__(self, types: Sequence[str], dim: int = 50, dropout: float = 0.0, match_sets: bool = False):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dictionary feature dim must be >= 1, got {dim}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dictionary feature dropout must be in [0, 1], got {dropout}")
        self.vocab = DictionaryTags(types)
        self.dim = dim
        self.feature_dropout = dropout
        self.embedding = nn.Embedding(len(self.vocab), dim, padding_idx=DICT_PAD_ID)
        self.match_sets = bool(match_sets)
        self.set_projection = nn.Linear(self.vocab.set_size, dim, bias=False) if self.match_sets else None

    def hparams(self) -> dict:
        out = {"types": list(self.vocab.types), "dim": self.dim, "dropout": self.feature_dropout}
        if self.match_sets:
            out["match_sets"] = True
        return out

    def forward(self, ids: Tensor, sets: Tensor | None = None) -> Tensor:
        """``ids (B, T)`` long (and ``sets (B, T, set_size)`` with match sets) -> ``(B, T, dim)``."""
        if self.set_projection is None and sets is not None:
            raise ValueError("match sets given to a dictionary feature built without them")
        if self.set_projection is not None and (sets is None or sets.shape != (*ids.shape, self.vocab.set_size)):
            got = None if sets is None else tuple(sets.shape)
            raise ValueError(f"the dictionary feature has match sets: expected sets of shape "
                             f"{(*ids.shape, self.vocab.set_size)}, got {got}")
        drop = None
        if self.training and self.feature_dropout > 0:
            drop = drop_mask(ids, self.feature_dropout)  # (B, T): a char's tag and set go together
            ids = drop_tags(ids, self.feature_dropout, drop=drop)
        out = self.embedding(ids)  # (B, T, dim)
        if self.set_projection is None:
            return out
        if drop is not None:
            sets = sets.masked_fill(drop[..., None], 0.0)
        return out + self.set_projection(sets.to(out.dtype))
