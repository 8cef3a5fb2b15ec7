"""Text encodings of input files: detection among UTF-8, UTF-8 with BOM and GB18030.

Detection looks at the bytes of a file, not at its name: a BOM means ``utf-8-sig``; otherwise the
first window that holds non-ASCII bytes is decoded as UTF-8, then as GB18030, and the first codec
that accepts it wins (an all-ASCII file is ``utf-8``). Files are then read line by line in binary
and decoded per line, so a multi-GB file is never held in memory and a bad line is reported by its
number instead of failing the whole file. Splitting on ``b"\\n"`` is safe for both codecs: neither
UTF-8 nor GB18030 uses 0x0A inside a multi-byte character.
"""
from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

UTF8 = "utf-8"
UTF8_BOM = "utf-8-sig"
GB18030 = "gb18030"
ENCODINGS = (UTF8, UTF8_BOM, GB18030)

_BOM = codecs.BOM_UTF8


class EncodingError(ValueError):
    """A file (or line) that is none of UTF-8, UTF-8 with BOM, GB18030."""

_CHUNK = 1 << 16  # bytes read at a time while looking for the first non-ASCII byte
_WINDOW = 1 << 20  # bytes decoded to decide once non-ASCII bytes were seen


def _valid_prefix(data: bytes, encoding: str, final: bool) -> int:
    """How many bytes of ``data`` decode in ``encoding`` before the first invalid byte (all of
    them when valid; a truncated last character is allowed unless ``final``)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        decoder.decode(data, final=final)
    except UnicodeDecodeError as exc:
        return exc.start
    return len(data)


def detect_bytes(data: bytes, final: bool = True) -> str | None:
    """The encoding of ``data`` (the whole file when ``final``, else its beginning), or None.

    The first codec of UTF-8, GB18030 that decodes all of ``data`` wins. When both meet an
    invalid byte, the one that decodes the longer prefix wins (UTF-8 on a tie) provided that
    prefix holds some non-ASCII text, so a file with a few bad lines is still read (those lines
    are then reported one by one); otherwise None.

    >>> detect_bytes("病历".encode("gb18030"))
    'gb18030'
    """
    if data.startswith(_BOM):
        return UTF8_BOM
    if data.isascii():
        return UTF8
    best, best_len = None, -1
    for encoding in (UTF8, GB18030):
        n = _valid_prefix(data, encoding, final)
        if n == len(data):
            return encoding
        if n > best_len:
            best, best_len = encoding, n
    return best if not data[:best_len].isascii() else None


def detect_encoding(path: str | Path) -> str | None:
    """Detect the encoding of the file at ``path``; None when it is none of ``ENCODINGS``.

    Reads only up to the first non-ASCII window (at most ``_WINDOW`` bytes past it).
    """
    with open(path, "rb") as fh:
        head = fh.read(len(_BOM))
        if head == _BOM:
            return UTF8_BOM
        chunk = head + fh.read(_CHUNK)
        # an all-ASCII chunk ends on a character boundary, so the first non-ASCII chunk starts
        # on one too
        while chunk and chunk.isascii():
            chunk = fh.read(_CHUNK)
        if not chunk:
            return UTF8  # empty or pure ASCII
        window = chunk + fh.read(_WINDOW)
        at_eof = fh.read(1) == b""
        return detect_bytes(window, final=at_eof)


def read_text(path: str | Path) -> tuple[str, str]:
    """The whole text of a small file (one document) and its detected encoding.

    Raises ``EncodingError`` (naming the first bad byte and its line) unless the whole file
    decodes in one of ``ENCODINGS``. No newline translation: ``\\r\\n`` stays, so offsets match
    the characters on disk.
    """
    data = Path(path).read_bytes()
    encoding = detect_bytes(data, final=True)
    if encoding is None:
        raise EncodingError("not UTF-8 (with or without BOM) nor GB18030: "
                            + _first_bad(data, UTF8))
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        raise EncodingError(f"mostly {encoding} but {_first_bad(data, encoding)}") from None


def _first_bad(data: bytes, encoding: str) -> str:
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"invalid byte 0x{data[exc.start]:02x} on line {line}"
    return "undecodable"


def iter_lines(path: str | Path, encoding: str, *, keep_ends: bool = False
               ) -> Iterator[tuple[int, str | None, bytes]]:
    """Yield ``(line_number, text, raw_bytes)`` for every line of the file, 1-based.

    ``text`` is None when that line does not decode in ``encoding`` (``raw_bytes`` lets the caller
    name the problem). Line ends (``\\n`` or ``\\r\\n``) are removed unless ``keep_ends``.
    A BOM at the start of the file is skipped.
    """
    codec = UTF8 if encoding == UTF8_BOM else encoding
    with open(path, "rb") as fh:
        first = True
        for number, raw in enumerate(fh, 1):
            if first:
                first = False
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
            if not keep_ends:
                raw = raw.rstrip(b"\n")
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                text = None
            yield number, text, raw
