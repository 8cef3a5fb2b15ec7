"""Character word2vec (gensim): the vectors that initialise the BiLM's (and the tagger's) char
embeddings.

Sentences are the characters of each text. Texts are streamed through a restartable iterable
(gensim walks the corpus once to build the vocabulary and once per epoch), so a corpus need not
fit in memory when the caller passes something re-iterable. Saved as ``vectors.npy`` +
``chars.json`` (no pickle).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cemr.config import Word2VecConfig
from cemr.progress import progress

# gensim silently truncates sentences longer than this many tokens: longer texts are cut into
# pieces of at most this many chars before they reach it.
GENSIM_MAX_SENTENCE = 10000

VECTORS_FILE = "vectors.npy"
CHARS_FILE = "chars.json"


@dataclass
class CharVectors:
    """One vector per char: ``vectors[i]`` belongs to ``chars[i]``.

    ``vectors``: float32 array (V, dim).
    """

    chars: list[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"CharVectors: vectors must be 2-D (V, dim), got shape {self.vectors.shape}")
        if len(self.chars) != self.vectors.shape[0]:
            raise ValueError(
                f"CharVectors: {len(self.chars)} chars but {self.vectors.shape[0]} vector rows"
            )
        bad = [c for c in self.chars if len(c) != 1]
        if bad:
            raise ValueError(f"CharVectors: entries must be single chars, got {bad[:5]!r}")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharVectors: duplicate chars")
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.chars)

    def index(self) -> dict[str, int]:
        """char -> row of ``vectors``."""
        return {c: i for i, c in enumerate(self.chars)}

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / VECTORS_FILE, self.vectors, allow_pickle=False)
        (d / CHARS_FILE).write_text(json.dumps(self.chars, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "CharVectors":
        d = Path(directory)
        for name in (VECTORS_FILE, CHARS_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d / name}: missing (not a saved CharVectors directory)")
        try:
            chars = json.loads((d / CHARS_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{d / CHARS_FILE}: invalid JSON: {exc}") from exc
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise ValueError(f"{d / CHARS_FILE}: expected a JSON list of strings")
        vectors = np.load(d / VECTORS_FILE, allow_pickle=False)
        try:
            return cls(chars, vectors)
        except ValueError as exc:
            raise ValueError(f"{d}: {exc}") from exc


class CharSentences:
    """A restartable iterable of char lists for gensim: every ``iter()`` walks ``source`` again.

    ``source`` is a re-iterable collection of texts or a zero-argument factory returning a fresh
    iterable. Texts longer than ``max_len`` chars are yielded in consecutive pieces (nothing is
    dropped); empty texts yield nothing.
    """

    def __init__(self, source: Iterable[str] | Callable[[], Iterable[str]], max_len: int = GENSIM_MAX_SENTENCE):
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        self.source = source
        self.max_len = max_len

    def _texts(self) -> Iterable[str]:
        return self.source() if callable(self.source) else self.source

    def __iter__(self) -> Iterator[list[str]]:
        for text in self._texts():
            if not isinstance(text, str):
                raise TypeError(f"CharSentences: expected str texts, got {type(text).__name__}")
            for start in range(0, len(text), self.max_len):
                yield list(text[start:start + self.max_len])


class _Counted:
    """``sentences`` (re-iterable), each one counted on ``bar`` as gensim reads it: every pass
    (vocabulary, each epoch) walks ``sentences`` again."""

    def __init__(self, sentences: Iterable[list[str]], bar: Any):
        self.sentences = sentences
        self.bar = bar

    def __iter__(self) -> Iterator[list[str]]:
        for sentence in self.sentences:
            yield sentence
            self.bar.update(1)


def restartable(texts: Iterable[str]) -> Iterable[str]:
    """A one-shot iterator (generator, file object) is materialised; collections pass through."""
    if iter(texts) is texts:
        return list(texts)
    return texts


def word2vec_args(cfg: Word2VecConfig) -> dict[str, Any]:
    """Flat keyword arguments of :func:`train_char_word2vec` from the config section."""
    return {"dim": cfg.dim, "window": cfg.window, "min_count": cfg.min_count, "epochs": cfg.epochs, "sg": cfg.sg}


def train_char_word2vec(
    texts: Iterable[str] | Callable[[], Iterable[str]],
    dim: int = 128,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 5,
    sg: bool = False,
    seed: int = 0,
    workers: int = 1,
) -> CharVectors:
    """Train char vectors on ``texts`` (each text is one sentence of chars).

    ``texts``: a re-iterable collection or a factory of fresh iterables (streamed every pass); a
    one-shot iterator is materialised in memory first. With ``workers=1`` the result is
    reproducible for a given seed.
    """
    source = texts if callable(texts) else restartable(texts)
    tokens, vectors = train_token_word2vec(CharSentences(source), dim=dim, window=window, min_count=min_count,
                                           epochs=epochs, sg=sg, seed=seed, workers=workers, what="char")
    return CharVectors(tokens, vectors)


def train_token_word2vec(
    sentences: Iterable[list[str]],
    *,
    dim: int,
    window: int,
    min_count: int,
    epochs: int,
    sg: bool,
    seed: int,
    workers: int = 1,
    what: str = "token",
) -> tuple[list[str], np.ndarray]:
    """gensim word2vec over ``sentences`` (a re-iterable of token lists, walked once for the
    vocabulary and once per epoch): the tokens seen at least ``min_count`` times, most frequent
    first, and their float32 vectors ``(V, dim)``. ``what`` names the tokens in errors and
    progress bars (char, bigram)."""
    from gensim.models import Word2Vec  # imported here: gensim is only needed for this step

    if dim < 1 or window < 1 or min_count < 1 or epochs < 1 or workers < 1:
        raise ValueError("dim, window, min_count, epochs and workers must all be >= 1")
    if next(iter(sentences), None) is None:
        plural = "characters" if what == "char" else f"{what}s"
        raise ValueError(f"{what} word2vec: the corpus has no {plural}")
    model = Word2Vec(
        vector_size=dim, window=window, min_count=min_count, sg=1 if sg else 0, seed=seed, workers=workers
    )
    label = "word2vec" if what == "char" else f"{what} word2vec"
    with progress(desc=f"{label} vocabulary", unit="sent") as bar:
        model.build_vocab(_Counted(sentences, bar))
    if len(model.wv.index_to_key) == 0:
        raise ValueError(f"{what} word2vec: no {what} occurs at least min_count={min_count} times")
    with progress(total=model.corpus_count * epochs, desc=f"{label} ({epochs} epochs)", unit="sent") as bar:
        model.train(_Counted(sentences, bar), total_examples=model.corpus_count, epochs=epochs)
    return list(model.wv.index_to_key), np.array(model.wv.vectors, dtype=np.float32)


def init_embedding_from_vectors(embedding: nn.Embedding, tokens: Sequence[str], vectors: CharVectors) -> int:
    """Copy the word2vec vector of every token found in ``vectors`` into ``embedding``'s row.

    ``embedding.weight``: (len(tokens), dim) with dim == ``vectors.dim``. Rows of tokens without a
    vector (specials, unseen chars) keep their initialisation. Returns how many rows were copied.
    """
    weight = embedding.weight
    if weight.shape[0] != len(tokens):
        raise ValueError(f"embedding has {weight.shape[0]} rows but {len(tokens)} tokens were given")
    if weight.shape[1] != vectors.dim:
        raise ValueError(f"embedding dim {weight.shape[1]} != word2vec dim {vectors.dim}")
    index = vectors.index()
    rows = [(i, index[t]) for i, t in enumerate(tokens) if t in index]
    if rows:
        dst = torch.tensor([r[0] for r in rows], dtype=torch.long)
        src = torch.from_numpy(vectors.vectors[[r[1] for r in rows]])
        with torch.no_grad():
            weight[dst.to(weight.device)] = src.to(weight.device, weight.dtype)
    return len(rows)
