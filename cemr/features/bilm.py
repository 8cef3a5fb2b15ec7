"""BiLM: a forward and a backward char LSTM language model; frozen, their hidden states are the
``h_f ++ h_b`` feature of every char.

The forward LM reads ``<bos> c0 c1 ... c(n-1)`` and predicts ``c0 ... c(n-1) <eos>``; the
backward LM does the same on the reversed text. Its hidden state after reading ``c_t`` is the
feature of char t, so ``h_f[t]`` has read chars 0..t and ``h_b[t]`` chars n-1..t of the same text
(never padding, never another text).
"""
from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from cemr.batching import length_batches
from cemr.config import BiLMConfig
from cemr.features.frozen import FreezableFeaturizer
from cemr.features.word2vec import CharVectors, init_embedding_from_vectors
from cemr.progress import progress

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
IGNORE = -100

CONFIG_FILE = "bilm_config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------


class CharVocab:
    """Char <-> id, with ``<pad> <unk> <bos> <eos>`` at ids 0..3; unknown chars map to ``<unk>``."""

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        bad = [c for c in chars if len(c) != 1]
        if bad:
            raise ValueError(f"CharVocab: entries must be single chars, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharVocab: duplicate chars")
        self.tokens: list[str] = list(SPECIALS) + chars
        self._ids = {c: i for i, c in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "CharVocab":
        """Chars occurring at least ``min_count`` times, most frequent first (ties by char)."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        return cls(sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c)))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """One id per char of ``text`` (no bos/eos)."""
        get = self._ids.get
        return [get(c, UNK_ID) for c in text]

    def to_json(self) -> str:
        return json.dumps(self.tokens[len(SPECIALS):], ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str = "vocab") -> "CharVocab":
        try:
            chars = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: invalid JSON: {exc}") from exc
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise ValueError(f"{where}: expected a JSON list of single chars")
        return cls(chars)


# ----------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------


def pad_ids(seqs: Sequence[Sequence[int]], pad: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Right-pad id lists: ids (B, T) long, lengths (B,) long; T = max length (may be 0)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max()) if len(seqs) else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return ids, lengths


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse every row of ``x`` (B, T, ...) within its own length; padding stays at the end.

    ``lengths``: (B,). Applying it twice gives ``x`` back.
    """
    B, T = x.shape[:2]
    pos = torch.arange(T, device=x.device).unsqueeze(0).expand(B, T)  # (B, T)
    lens = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    idx = torch.where(pos < lens, lens - 1 - pos, pos)  # (B, T)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def lm_batch(seqs: Sequence[Sequence[int]], reverse: bool = False) -> tuple[Tensor, Tensor]:
    """Language-model inputs and targets for id lists (reversed first when ``reverse``).

    inputs (B, L+1) = ``<bos> s``, padded with ``<pad>``; targets (B, L+1) = ``s <eos>``, padded
    with -100 (ignored by the loss).
    """
    rows = [list(reversed(s)) if reverse else list(s) for s in seqs]
    inputs, _ = pad_ids([[BOS_ID] + r for r in rows], PAD_ID)
    targets, _ = pad_ids([r + [EOS_ID] for r in rows], IGNORE)
    return inputs, targets


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class CharLM(nn.Module):
    """One-direction char LSTM language model: embedding -> LSTM -> linear over the char vocab."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embedding_dim, hidden_dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.output = nn.Linear(hidden_dim, vocab_size)
        self.hidden_dim = hidden_dim

    def hidden_states(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> top-layer LSTM states (B, T, H); state t has read ids 0..t only."""
        out, _ = self.lstm(self.dropout(self.embedding(ids)))
        return out

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> next-token logits (B, T, V)."""
        return self.output(self.dropout(self.hidden_states(ids)))

    def loss(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """Summed cross-entropy over non-ignored targets (B, T) and their count."""
        logits = self(inputs)  # (B, T, V)
        total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
        return total, int((targets != IGNORE).sum())


def bilm_model_args(cfg: BiLMConfig) -> dict[str, Any]:
    """Flat :class:`CharLM` arguments (besides the vocab size) from the config section."""
    return {
        "embedding_dim": cfg.embedding_dim,
        "hidden_dim": cfg.hidden_dim,
        "layers": cfg.layers,
        "dropout": cfg.dropout,
    }


class BiLMFeaturizer(FreezableFeaturizer):
    """Frozen forward + backward char LMs; ``forward(texts)`` gives ``h_f ++ h_b`` per char.

    ``dim`` = 2 * hidden. With ``freeze=True`` (the default) parameters do not require grad and
    the module stays in eval mode even when a parent calls ``.train()``.
    """

    def __init__(self, vocab: CharVocab, forward_lm: CharLM, backward_lm: CharLM, freeze: bool = True):
        super().__init__()
        if forward_lm.hidden_dim != backward_lm.hidden_dim:
            raise ValueError("forward and backward LMs must have the same hidden size")
        self.vocab = vocab
        self.forward_lm = forward_lm
        self.backward_lm = backward_lm
        self.dim = 2 * forward_lm.hidden_dim
        self.set_frozen(freeze)

    def forward(self, texts: Sequence[str]) -> Tensor:
        """texts (B strings) -> (B, T, 2H), T = longest text in chars; zeros after each text's end."""
        ids, lengths = pad_ids([self.vocab.encode(t) for t in texts])
        ids, lengths = ids.to(self.device), lengths.to(self.device)
        B, T = ids.shape
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            bos = torch.full((B, 1), BOS_ID, dtype=torch.long, device=ids.device)
            h_f = self.forward_lm.hidden_states(torch.cat([bos, ids], 1))[:, 1:]  # (B, T, H)
            rev = reverse_padded(ids, lengths)  # (B, T)
            h_b = self.backward_lm.hidden_states(torch.cat([bos, rev], 1))[:, 1:]  # (B, T, H), reversed order
            h_b = reverse_padded(h_b, lengths)  # (B, T, H), back in text order
            mask = (torch.arange(T, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
            return torch.cat([h_f, h_b], dim=-1) * mask  # (B, T, 2H)

    # -- persistence ---------------------------------------------------------------------------

    def _arch(self) -> dict[str, Any]:
        lstm = self.forward_lm.lstm
        return {
            "vocab_size": len(self.vocab),
            "embedding_dim": self.forward_lm.embedding.embedding_dim,
            "hidden_dim": lstm.hidden_size,
            "layers": lstm.num_layers,
            "dropout": self.forward_lm.dropout.p,
        }

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(self._arch(), indent=2), encoding="utf-8")
        (d / VOCAB_FILE).write_text(self.vocab.to_json(), encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", freeze: bool = True) -> "BiLMFeaturizer":
        d = Path(directory)
        for name in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d / name}: missing (not a saved BiLM directory)")
        arch = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        vocab = CharVocab.from_json((d / VOCAB_FILE).read_text(encoding="utf-8"), str(d / VOCAB_FILE))
        if len(vocab) != arch["vocab_size"]:
            raise ValueError(f"{d}: vocab.json has {len(vocab)} tokens, config says {arch['vocab_size']}")
        args = {k: arch[k] for k in ("embedding_dim", "hidden_dim", "layers", "dropout")}
        model = cls(vocab, CharLM(len(vocab), **args), CharLM(len(vocab), **args), freeze=False)
        model.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
        model.to(device)
        model.set_frozen(freeze)
        return model


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def chunk_text(text: str, max_len: int) -> list[str]:
    """Consecutive pieces of at most ``max_len`` chars (no char dropped; empty text -> [])."""
    return [text[i:i + max_len] for i in range(0, len(text), max_len)]


def split_heldout(items: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded shuffle, then (train, heldout) with ``max(1, round(fraction * n))`` held out.

    Needs at least 2 items so that both parts are non-empty.
    """
    if len(items) < 2:
        raise ValueError(f"need at least 2 sentences to hold some out, got {len(items)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError("heldout fraction must be in (0, 1)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = min(len(items) - 1, max(1, round(fraction * len(items))))
    return [items[i] for i in order[n_held:]], [items[i] for i in order[:n_held]]


@torch.no_grad()
def perplexity(
    lm: CharLM, seqs: Sequence[Sequence[int]], reverse: bool, batch_size: int, device: torch.device
) -> float:
    """exp(mean next-char NLL) of ``lm`` over ``seqs`` (each predicts its chars and ``<eos>``)."""
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    batches = length_batches([len(s) for s in seqs], batch_size)
    for batch in progress(batches, desc=f"bilm perplexity ({'backward' if reverse else 'forward'})", unit="batch"):
        inputs, targets = lm_batch([seqs[i] for i in batch], reverse)
        loss, n = lm.loss(inputs.to(device), targets.to(device))
        total += float(loss)
        count += n
    lm.train(was_training)
    return math.exp(total / max(count, 1))


@dataclass
class _Corpus:
    train: list[list[int]]
    heldout: list[list[int]]
    available: int


def _prepare(texts: Iterable[str], vocab: CharVocab, max_len: int, max_sentences: int | None,
             heldout_fraction: float, seed: int) -> _Corpus:
    pieces = [p for t in texts for p in chunk_text(t, max_len)]
    available = len(pieces)
    if max_sentences is not None and available > max_sentences:
        random.Random(seed).shuffle(pieces)
        pieces = pieces[:max_sentences]
    train, held = split_heldout([vocab.encode(p) for p in pieces], heldout_fraction, seed)
    return _Corpus(train, held, available)


def train_bilm(
    texts: Iterable[str],
    vocab: CharVectors | Sequence[str] | None,
    cfg: BiLMConfig,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    heldout_fraction: float = 0.1,
    clip_norm: float = 5.0,
) -> tuple[BiLMFeaturizer, dict[str, float]]:
    """Train the forward and backward char LMs on ``texts``; return the frozen featurizer + metrics.

    ``vocab``: word2vec :class:`CharVectors` (its chars are the vocab; embeddings are initialised
    from it when ``cfg.embedding_dim`` equals its dim), a list of chars, or None (built from the
    texts). Texts are cut into pieces of ``cfg.max_len`` chars; at most ``cfg.max_sentences``
    pieces are used (a seeded sample; the metrics say how many were available). Adam, dropout,
    gradient clipping, batches of similar length. Metrics: perplexity per direction on the
    training pieces and on a held-out part (``heldout_ppl_*_initial`` before training).
    """
    say = log or (lambda _msg: None)
    device = torch.device(device)
    texts = list(texts)
    if isinstance(vocab, CharVectors):
        char_vocab = CharVocab(vocab.chars)
    elif vocab is None:
        char_vocab = CharVocab.build(texts)
    else:
        char_vocab = CharVocab(vocab)
    corpus = _prepare(texts, char_vocab, cfg.max_len, cfg.max_sentences, heldout_fraction, seed)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        args = bilm_model_args(cfg)
        lms = [CharLM(len(char_vocab), **args).to(device) for _ in range(2)]
        init_rows = 0
        if isinstance(vocab, CharVectors) and vocab.dim == cfg.embedding_dim:
            for lm in lms:
                init_rows = init_embedding_from_vectors(lm.embedding, char_vocab.tokens, vocab)
        metrics: dict[str, float] = {
            "vocab_size": len(char_vocab),
            "embedding_init_rows": init_rows,
            "sentences_available": corpus.available,
            "sentences_train": len(corpus.train),
            "sentences_heldout": len(corpus.heldout),
        }
        for name, lm, rev in (("f", lms[0], False), ("b", lms[1], True)):
            metrics[f"heldout_ppl_{name}_initial"] = perplexity(lm, corpus.heldout, rev, cfg.batch_size, device)
        params = [p for lm in lms for p in lm.parameters()]
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        order = torch.Generator().manual_seed(seed)  # batch order (cemr.batching)
        lengths = [len(s) for s in corpus.train]
        for epoch in range(cfg.epochs):
            for lm in lms:
                lm.train()
            total, count = 0.0, 0
            bar = progress(length_batches(lengths, cfg.batch_size, order), desc=f"bilm epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch")
            for batch in bar:
                seqs = [corpus.train[i] for i in batch]
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                n_tok = 0
                for lm, rev in ((lms[0], False), (lms[1], True)):
                    inputs, targets = lm_batch(seqs, rev)
                    loss, n_tok = lm.loss(inputs.to(device), targets.to(device))
                    loss_sum = loss_sum + loss / max(n_tok, 1)
                loss_sum.backward()
                for lm in lms:
                    torch.nn.utils.clip_grad_norm_(lm.parameters(), clip_norm)
                optimizer.step()
                total += loss_sum.item() / 2 * n_tok
                count += n_tok
                bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
            held_f = perplexity(lms[0], corpus.heldout, False, cfg.batch_size, device)
            held_b = perplexity(lms[1], corpus.heldout, True, cfg.batch_size, device)
            say(f"bilm epoch {epoch + 1}/{cfg.epochs}: train loss {total / max(count, 1):.4f} "
                f"heldout ppl f {held_f:.3f} b {held_b:.3f}")
        for name, lm, rev in (("f", lms[0], False), ("b", lms[1], True)):
            metrics[f"train_ppl_{name}"] = perplexity(lm, corpus.train, rev, cfg.batch_size, device)
            metrics[f"heldout_ppl_{name}"] = perplexity(lm, corpus.heldout, rev, cfg.batch_size, device)
    metrics["epochs"] = cfg.epochs
    metrics["seconds"] = time.perf_counter() - started
    return BiLMFeaturizer(char_vocab, lms[0], lms[1], freeze=True), metrics
