"""Char bigram embeddings: word2vec (gensim) on the char bigrams of the unlabeled text.

A text of ``n`` chars has ``n + 1`` boundary bigrams (:func:`bigram_tokens`): ``<s>c0``, ``c0c1``,
..., ``c(n-2)c(n-1)``, ``c(n-1)</s>``. Char ``i`` gets the vector of the bigram ending at it
(token ``i``) and of the one starting at it (token ``i + 1``), concatenated: ``dim = 2 * vector
size``. Bigram features are a standard lever of Chinese char taggers (a char's meaning depends on
its neighbour: 血 in 血压 vs 血常规); here they are pretrained on the same text as word2vec and the
BiLM, out of the labels' reach.

Bigrams seen fewer than ``min_count`` times (and every bigram of an unseen char) share row 0, a
zero vector. Frozen by default (``model.bigram.freeze``): the vectors stay as pretrained, which
keeps rare bigrams of train text from being fitted to its labels; ``freeze: false`` fine-tunes
them with the tagger. The lookup is cheap, so its output is never cached (``cacheable = False``).
Saved as ``config.json`` + ``bigrams.json`` + ``weights.safetensors`` (no pickle).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cemr.config import BigramConfig
from cemr.features.frozen import FreezableFeaturizer
from cemr.features.word2vec import GENSIM_MAX_SENTENCE, restartable, train_token_word2vec

BOS = "<s>"
EOS = "</s>"
UNKNOWN_ID = 0  # unseen / rare bigrams and padding: a zero row

CONFIG_FILE = "config.json"
BIGRAMS_FILE = "bigrams.json"
WEIGHTS_FILE = "weights.safetensors"


def bigram_tokens(text: str) -> list[str]:
    """The ``len(text) + 1`` boundary bigrams of ``text`` ([] for an empty text): a real bigram is
    exactly two chars, the first and last carry the ``<s>`` / ``</s>`` markers (never two chars
    long, so they cannot collide with a real one)."""
    if not text:
        return []
    return [BOS + text[0], *(text[i:i + 2] for i in range(len(text) - 1)), text[-1] + EOS]


class BigramSentences:
    """A restartable iterable of bigram token lists for gensim: every ``iter()`` walks ``source``
    again (a re-iterable collection of texts or a factory of fresh iterables). Texts longer than
    ``max_len`` chars are cut into consecutive pieces first (each piece gets its own markers)."""

    def __init__(self, source: Iterable[str] | Callable[[], Iterable[str]], max_len: int = GENSIM_MAX_SENTENCE - 1):
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        self.source = source
        self.max_len = max_len

    def __iter__(self) -> Iterator[list[str]]:
        texts = self.source() if callable(self.source) else self.source
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"BigramSentences: expected str texts, got {type(text).__name__}")
            for start in range(0, len(text), self.max_len):
                yield bigram_tokens(text[start:start + self.max_len])


class BigramFeaturizer(FreezableFeaturizer):
    """``forward(texts) -> (B, T, 2 * vector_size)``: per char, the vectors of the bigram ending at
    it and of the one starting at it; zeros after each text's end. ``bigrams[i]`` owns embedding
    row ``i + 1`` (row 0: unknown, zero)."""

    cacheable = False  # an embedding lookup: caching it would cost memory and save nothing

    def __init__(self, bigrams: Sequence[str], vector_size: int, vectors: np.ndarray | Tensor | None = None,
                 freeze: bool = True):
        super().__init__()
        if vector_size < 1:
            raise ValueError(f"vector_size must be >= 1, got {vector_size}")
        self.bigrams = list(bigrams)
        self.index = {b: i + 1 for i, b in enumerate(self.bigrams)}
        if len(self.index) != len(self.bigrams):
            raise ValueError("BigramFeaturizer: duplicate bigrams")
        self.embedding = nn.Embedding(len(self.bigrams) + 1, vector_size, padding_idx=UNKNOWN_ID)
        if vectors is not None:
            v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
            if tuple(v.shape) != (len(self.bigrams), vector_size):
                raise ValueError(f"BigramFeaturizer: vectors must be ({len(self.bigrams)}, {vector_size}), "
                                 f"got {tuple(v.shape)}")
            with torch.no_grad():
                self.embedding.weight[1:] = v
        self.vector_size = int(vector_size)
        self.dim = 2 * self.vector_size
        self.set_frozen(freeze)

    def ids(self, texts: Sequence[str]) -> Tensor:
        """``(B, T + 1)`` bigram ids, T = the longest text; 0 for unknown bigrams and padding."""
        width = max((len(t) for t in texts), default=0) + 1
        out = np.zeros((len(texts), width), dtype=np.int64)
        get = self.index.get
        for row, text in enumerate(texts):
            toks = bigram_tokens(text)
            out[row, :len(toks)] = [get(tok, UNKNOWN_ID) for tok in toks]
        return torch.from_numpy(out)

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids = self.ids(texts).to(self.device)  # (B, T + 1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            e = self.embedding(ids)  # (B, T + 1, d)
            # left bigram of char i is token i, right is token i + 1; past a text's end both are
            # padding (row 0, zero) except the right bigram of position n - 1 (its </s> token)
            feats = torch.cat([e[:, :-1], e[:, 1:]], dim=-1)  # (B, T, 2d)
            lengths = torch.tensor([len(t) for t in texts], device=ids.device)
            mask = (torch.arange(feats.shape[1], device=ids.device).unsqueeze(0) < lengths.unsqueeze(1))
            return feats * mask.unsqueeze(-1)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arch = {"vector_size": self.vector_size, "bigrams": len(self.bigrams)}
        (d / CONFIG_FILE).write_text(json.dumps(arch, indent=2), encoding="utf-8")
        (d / BIGRAMS_FILE).write_text(json.dumps(self.bigrams, ensure_ascii=False), encoding="utf-8")
        save_file({"embedding.weight": self.embedding.weight.detach().cpu().contiguous()}, str(d / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", freeze: bool = True) -> "BigramFeaturizer":
        d = Path(directory)
        for name in (CONFIG_FILE, BIGRAMS_FILE, WEIGHTS_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d / name}: missing (not a saved bigram featurizer directory)")
        try:
            arch = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
            bigrams = json.loads((d / BIGRAMS_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{d}: invalid JSON: {exc}") from exc
        if not isinstance(bigrams, list) or not all(isinstance(b, str) for b in bigrams):
            raise ValueError(f"{d / BIGRAMS_FILE}: expected a JSON list of strings")
        if len(bigrams) != arch.get("bigrams"):
            raise ValueError(f"{d}: {BIGRAMS_FILE} has {len(bigrams)} bigrams, {CONFIG_FILE} says {arch.get('bigrams')}")
        model = cls(bigrams, int(arch["vector_size"]), freeze=False)
        model.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
        model.to(device)
        model.set_frozen(freeze)
        return model


def train_bigram_featurizer(
    texts: Iterable[str] | Callable[[], Iterable[str]],
    cfg: BigramConfig,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[BigramFeaturizer, dict[str, float]]:
    """word2vec (``cfg``'s vector size, window, min_count, epochs, sg) on the bigrams of ``texts``
    (streamed every pass; one worker: reproducible for a seed). Returns the featurizer (frozen
    per ``cfg.freeze``) and its metrics."""
    started = time.perf_counter()
    source = texts if callable(texts) else restartable(texts)
    tokens, vectors = train_token_word2vec(
        BigramSentences(source), dim=cfg.dim, window=cfg.window, min_count=cfg.min_count, epochs=cfg.epochs,
        sg=cfg.sg, seed=seed, workers=1, what="bigram")
    module = BigramFeaturizer(tokens, cfg.dim, vectors, freeze=cfg.freeze)
    if log is not None:
        log(f"bigram: {len(tokens)} bigrams x {cfg.dim} (min_count {cfg.min_count})")
    return module, {"vocab_size": float(len(tokens)), "dim": float(cfg.dim),
                    "seconds": time.perf_counter() - started}

