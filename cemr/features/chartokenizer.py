"""A char-level BERT tokenizer: char i of a text is token i (token i+1 after ``[CLS]``).

BERT's own WordPiece tokenizer drops whitespace, splits Latin words into pieces and lowercases,
so its tokens do not align with chars. Here every char maps to exactly one id through a BERT
style ``vocab.txt`` (one token per line; ``[PAD] [UNK] [CLS] [SEP] [MASK]`` must be present):
the char itself when the vocab has it, else its lowercase, else its NFKC form (full-width ->
half-width), else ``[UNK]``; whitespace chars map to one dedicated token (``[unused1]`` when the
vocab has it, else ``[UNK]``). Works with a bert-base-chinese ``vocab.txt`` (single CJK chars,
``##`` pieces are simply never used) and with a vocab built from a corpus.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from cemr.corpus.document import CorpusError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
WHITESPACE = "[unused1]"
VOCAB_FILE = "vocab.txt"


class CharTokenizer:
    """Char -> id through a BERT vocab; ``len(encode(text)) == len(text)`` always."""

    def __init__(self, tokens: Sequence[str], source: str = "<vocab>"):
        tokens = list(tokens)
        ids: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if tok == "":
                raise CorpusError(source, i + 1, "empty token")
            if tok in ids:
                raise CorpusError(source, i + 1, f"duplicate token {tok!r} (first at line {ids[tok] + 1})")
            ids[tok] = i
        missing = [s for s in SPECIALS if s not in ids]
        if missing:
            raise CorpusError(source, None, f"vocab lacks the special token(s) {' '.join(missing)}")
        self.tokens = tokens
        self.source = source
        self._ids = ids
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[s] for s in SPECIALS)
        self.whitespace_id = ids.get(WHITESPACE, self.unk_id)
        self._cache: dict[str, int] = {}

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_vocab_file(cls, path: str | Path) -> "CharTokenizer":
        """Read a BERT ``vocab.txt`` (UTF-8, one token per line, line n -> id n-1)."""
        p = Path(path)
        if p.is_dir():
            p = p / VOCAB_FILE
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CorpusError(str(p), None, f"cannot read vocab: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise CorpusError(str(p), None, f"not UTF-8: {exc}") from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([ln.rstrip("\r") for ln in lines], str(p))

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "CharTokenizer":
        """Specials, ``[unused1]`` (whitespace), then the corpus's non-space chars seen at least
        ``min_count`` times, most frequent first (ties by char); at most ``max_size`` tokens."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        kept = (c for c, n in counts.items() if n >= min_count and not c.isspace())
        chars = sorted(kept, key=lambda c: (-counts[c], c))
        tokens = list(SPECIALS) + [WHITESPACE] + chars
        if max_size is not None:
            tokens = tokens[:max(max_size, len(SPECIALS) + 1)]
        return cls(tokens, "<built vocab>")

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.txt`` into ``directory``; returns its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / VOCAB_FILE
        path.write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")
        return path

    # -- encoding ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    def char_id(self, ch: str) -> int:
        """The id of one char (see the module docstring for the fallbacks)."""
        cached = self._cache.get(ch)
        if cached is not None:
            return cached
        if ch.isspace():
            out = self.whitespace_id
        else:
            out = self._ids.get(ch)
            if out is None:
                for alt in (ch.lower(), unicodedata.normalize("NFKC", ch), unicodedata.normalize("NFKC", ch).lower()):
                    if len(alt) == 1 and alt in self._ids:
                        out = self._ids[alt]
                        break
                else:
                    out = self.unk_id
        self._cache[ch] = out
        return out

    def encode(self, text: str) -> list[int]:
        """One id per char of ``text``, no ``[CLS]``/``[SEP]``."""
        return [self.char_id(c) for c in text]

    def batch(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``[CLS] chars [SEP]`` per text, right-padded.

        Returns input_ids (B, T+2) long and attention_mask (B, T+2) long, T = longest text; char
        i of text b is ``input_ids[b, i + 1]``.
        """
        width = max((len(t) for t in texts), default=0) + 2
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for b, text in enumerate(texts):
            row = [self.cls_id] + self.encode(text) + [self.sep_id]
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, : len(row)] = 1
        return ids, mask

    def special_ids(self) -> list[int]:
        """Ids never predicted or substituted by masked-LM: the five specials."""
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]
