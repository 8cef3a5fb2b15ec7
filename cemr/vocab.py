"""Character vocabulary of the tagger: one id per character, PAD=0 and UNK=1.

Chinese EMR text is tagged per character, so the vocabulary is a plain char -> id table built from
the training texts (characters seen fewer than ``min_count`` times map to UNK, so the UNK embedding
is trained on real rare characters). Saved as JSON (``{"format": ..., "chars": [...]}``) with the
ids implied by the order.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
_FORMAT = "cemr-char-vocab/1"


class CharVocab:
    """Char <-> id table; ``encode`` maps unknown characters to ``UNK_ID``."""

    def __init__(self, chars: Sequence[str]):
        """``chars``: the characters with ids 2, 3, ... in that order (PAD and UNK are implied)."""
        itos = [PAD, UNK]
        stoi = {PAD: PAD_ID, UNK: UNK_ID}
        for i, ch in enumerate(chars):
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entry {i}: expected one character, got {ch!r}")
            if ch in stoi:
                raise ValueError(f"vocabulary entry {i}: duplicate character {ch!r}")
            stoi[ch] = len(itos)
            itos.append(ch)
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "CharVocab":
        """Characters of ``texts`` seen at least ``min_count`` times, most frequent first
        (ties by code point, so the result does not depend on the order of ``texts``)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, ch: str) -> bool:
        return ch in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"CharVocab(size={len(self)})"

    @property
    def chars(self) -> list[str]:
        """The real characters (ids 2..), without PAD and UNK."""
        return self.itos[2:]

    def encode(self, text: str) -> list[int]:
        """One id per character of ``text`` (UNK_ID for unknown characters)."""
        get = self.stoi.get
        return [get(ch, UNK_ID) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of ``encode`` for known characters; PAD is dropped, UNK shown as ``?``."""
        out = []
        for i in ids:
            if i == PAD_ID:
                continue
            out.append("?" if i == UNK_ID else self.itos[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "CharVocab":
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("chars"), list):
            raise ValueError(f"{source}: not a cemr char vocabulary (expected format {_FORMAT!r} and a 'chars' list)")
        try:
            return cls(data["chars"])
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharVocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        return cls.from_dict(data, str(path))
