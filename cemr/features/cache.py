"""A bounded cache of frozen featurizer outputs, keyed by sentence text.

A frozen featurizer (the BiLM always, BERT with ``freeze: true``) maps the same text to the same
vectors in every epoch, so recomputing it for every batch of every epoch is wasted work: with the
cache, epoch 1 fills it and epochs 2..N cost only the BiGRU / attention / CRF.

One :class:`FeatureCache` serves one featurizer (never shared: the tagger keeps one per featurizer
name and drops it when the module behind the name changes). Entries are CPU float tensors
``(T, D)`` of one text (``T = len(text)``), evicted least-recently-used once the total number of
stored elements exceeds ``max_elements``. :func:`cached_features` is the batch-level entry point:
it looks every text up, runs the featurizer once on the misses only, stores their rows, and
assembles the ``(B, T, D)`` batch with zeros after each text's end (as the featurizers do).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import Tensor

BYTES_PER_ELEMENT = 4  # float32


def elements_for_mb(mb: float) -> int:
    """The element budget of ``mb`` MiB of float32 entries (``mb <= 0``: 0, i.e. off)."""
    return max(0, int(mb * 2**20) // BYTES_PER_ELEMENT)


class FeatureCache:
    """LRU map ``text -> (len(text), dim)`` CPU tensor, capped at ``max_elements`` in total.

    ``dim`` is fixed by the first entry; an entry of another width raises (a cache is one
    featurizer's). An entry larger than the whole budget is not stored. ``hits``/``misses`` count
    lookups since creation (or :meth:`clear`).
    """

    def __init__(self, max_elements: int):
        if max_elements < 0:
            raise ValueError(f"max_elements must be >= 0, got {max_elements}")
        self.max_elements = max_elements
        self.dim: int | None = None
        self._entries: OrderedDict[str, Tensor] = OrderedDict()
        self.elements = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: str) -> bool:
        return text in self._entries

    def get(self, text: str) -> Tensor | None:
        """The stored ``(len(text), dim)`` rows, marked most recently used; None on a miss."""
        row = self._entries.get(text)
        if row is None:
            self.misses += 1
            return None
        self._entries.move_to_end(text)
        self.hits += 1
        return row

    def put(self, text: str, rows: Tensor) -> None:
        """Store ``rows (len(text), dim)`` (detached, copied to CPU), evicting LRU entries."""
        if rows.dim() != 2 or rows.shape[0] != len(text):
            raise ValueError(f"cache rows must be ({len(text)}, dim) for a text of {len(text)} chars, got {tuple(rows.shape)}")
        if self.dim is None:
            self.dim = int(rows.shape[1])
        elif rows.shape[1] != self.dim:
            raise ValueError(f"this cache holds {self.dim}-dim features, got {int(rows.shape[1])}-dim rows")
        n = rows.numel()
        if n > self.max_elements:
            return
        old = self._entries.pop(text, None)
        if old is not None:
            self.elements -= old.numel()
        while self._entries and self.elements + n > self.max_elements:
            _, evicted = self._entries.popitem(last=False)
            self.elements -= evicted.numel()
        self._entries[text] = rows.detach().to("cpu", torch.float32).clone()
        self.elements += n

    def clear(self) -> None:
        self._entries.clear()
        self.elements = 0
        self.hits = 0
        self.misses = 0
        self.dim = None


def cached_features(
    cache: FeatureCache,
    featurize: Callable[[list[str]], Tensor],
    texts: Sequence[str],
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(B, T, D)`` features of ``texts`` (T = longest text), computing only the cache misses.

    ``featurize(texts) -> (B', T', D)`` is called once with the distinct missed texts (or not at
    all); its rows ``[:len(text)]`` are stored. Positions after a text's end are zeros.
    """
    texts = list(texts)
    t = max((len(x) for x in texts), default=0)
    found: dict[str, Tensor] = {}
    missing: list[str] = []
    for x in texts:
        if x in found or x in missing:
            continue
        row = cache.get(x)
        if row is None:
            missing.append(x)
        else:
            found[x] = row
    if missing:
        fresh = featurize(missing)  # (M, T_m, D)
        if fresh.dim() != 3 or fresh.shape[0] != len(missing):
            raise ValueError(f"featurizer returned shape {tuple(fresh.shape)} for {len(missing)} texts")
        fresh = fresh.detach().to("cpu", torch.float32)
        for i, x in enumerate(missing):
            row = fresh[i, : len(x)]  # (T_i, D)
            found[x] = row
            cache.put(x, row)
    dim = next(iter(found.values())).shape[1] if found else (cache.dim or 0)
    out = torch.zeros(len(texts), t, dim)  # (B, T, D)
    for b, x in enumerate(texts):
        out[b, : len(x)] = found[x]
    return out.to(device)
