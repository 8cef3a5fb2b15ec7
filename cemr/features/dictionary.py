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
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from cemr.tags import BEGIN, INSIDE, OUTSIDE, parse_tag

PAD_TAG = "<pad>"
DICT_PAD_ID = 0
DICT_O_ID = 1


class DictionaryTags:
    """Vocabulary of dictionary tags: ``<pad>`` = 0, ``O`` = 1, then ``B-X``, ``I-X`` per type."""

    def __init__(self, types: Sequence[str]):
        types = list(types)
        if len(set(types)) != len(types) or any(not isinstance(t, str) or not t for t in types):
            raise ValueError(f"dictionary types must be distinct non-empty strings, got {types!r}")
        self.types: tuple[str, ...] = tuple(types)
        self.tags: list[str] = [PAD_TAG, OUTSIDE] + [p + t for t in types for p in (BEGIN, INSIDE)]
        self._index = {t: i for i, t in enumerate(self.tags)}

    def __len__(self) -> int:
        return len(self.tags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DictionaryTags) and self.tags == other.tags

    def __repr__(self) -> str:
        return f"DictionaryTags(types={list(self.types)})"

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


def drop_tags(ids: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Feature dropout: each non-pad, non-``O`` tag id of ``ids (B, T)`` becomes ``O`` with prob ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dictionary feature dropout must be in [0, 1], got {p}")
    if p == 0.0:
        return ids
    noise = torch.rand(ids.shape, generator=generator, device=ids.device)  # (B, T)
    drop = (noise < p) & (ids > DICT_O_ID)  # (B, T)
    return ids.masked_fill(drop, DICT_O_ID)


class DictionaryFeature(nn.Module):
    """Embeds dictionary tag ids ``(B, T)`` into ``(B, T, dim)``; feature dropout while training.

    ``types``: the entity types the lexicon can produce; ``dropout``: probability of replacing a
    char's lexicon tag by ``O`` in training mode (never at inference).
    """

    def __init__(self, types: Sequence[str], dim: int = 50, dropout: float = 0.0):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dictionary feature dim must be >= 1, got {dim}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dictionary feature dropout must be in [0, 1], got {dropout}")
        self.vocab = DictionaryTags(types)
        self.dim = dim
        self.feature_dropout = dropout
        self.embedding = nn.Embedding(len(self.vocab), dim, padding_idx=DICT_PAD_ID)

    def hparams(self) -> dict:
        return {"types": list(self.vocab.types), "dim": self.dim, "dropout": self.feature_dropout}

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long -> ``(B, T, dim)``."""
        if self.training and self.feature_dropout > 0:
            ids = drop_tags(ids, self.feature_dropout)
        return self.embedding(ids)
