"""Text encodings of input files: UTF-8, UTF-8 with BOM, UTF-16 LE/BE with BOM and GB18030.

Detection looks at the bytes of a file, not at its name: a BOM means ``utf-8-sig``,
``utf-16-le`` or ``utf-16-be``; otherwise the first window that holds non-ASCII bytes is decoded as
UTF-8, then as GB18030, and the first codec that accepts it wins (an all-ASCII file is ``utf-8``).
UTF-32 and UTF-16 without a BOM are not supported: their NUL bytes make them binary here.

Binary content is recognised (``binary_problem``): a NUL byte outside UTF-16, a beginning that
decodes in none of the encodings, or one where control characters or undecodable bytes are more
than a tenth of the characters. ``file_encoding`` raises ``BinaryFileError`` for such a file.

Files are read line by line and decoded per line, so a multi-GB file is never held in memory and
a bad line is reported by its number instead of failing the whole file. UTF-8 and GB18030 files
are split on ``b"\\n"`` (neither codec uses 0x0A inside a multi-byte character); UTF-16 files are
decoded incrementally and split on the decoded ``"\\n"`` (0x0A bytes occur inside its characters).
"""
from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

UTF8 = "utf-8"
UTF8_BOM = "utf-8-sig"
UTF16_LE = "utf-16-le"
UTF16_BE = "utf-16-be"
GB18030 = "gb18030"
ENCODINGS = (UTF8, UTF8_BOM, UTF16_LE, UTF16_BE, GB18030)
SUPPORTED = "UTF-8 (with or without BOM), UTF-16 (with BOM) nor GB18030"

_BOM = codecs.BOM_UTF8
_UTF16_BOMS = ((codecs.BOM_UTF16_LE, UTF16_LE), (codecs.BOM_UTF16_BE, UTF16_BE))
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_SNIFF = 1 << 16  # bytes looked at to recognise binary content
_UNDECODABLE = "\ud800"  # marks a bad UTF-16 sequence: strict UTF-16 output never holds one
_TEXT_CONTROLS = frozenset("\t\n\r\f\v\x1a")
_MIN_BAD = 4  # fewer bad characters than this are bad lines of a text file, not binary content


def _mark_undecodable(exc: UnicodeDecodeError) -> tuple[str, int]:
    return _UNDECODABLE, exc.end


codecs.register_error("cemr.undecodable", _mark_undecodable)


class EncodingError(ValueError):
    """A file (or line) in none of the supported encodings."""


class BinaryFileError(EncodingError):
    """A file whose content is binary, not text (the message says why)."""


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``data`` names, or None (no BOM, or a
    UTF-32 one, which is not supported)."""
    if data.startswith(_UTF32_BOMS):
        return None
    if data.startswith(_BOM):
        return UTF8_BOM
    for bom, encoding in _UTF16_BOMS:
        if data.startswith(bom):
            return encoding
    return None

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
    bom = bom_encoding(data)
    if bom is not None:
        return bom
    if data.startswith(_UTF32_BOMS):
        return None
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

    Reads only up to the first non-ASCII window (at most ``_WINDOW`` bytes past it). Binary
    content is not looked for here: see ``file_encoding``.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith(_UTF32_BOMS):
            return None
        bom = bom_encoding(head)
        if bom is not None:
            return bom
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
    problem = binary_problem(data[:_SNIFF], final=len(data) <= _SNIFF)
    if problem is not None:
        raise BinaryFileError(problem)
    encoding = detect_bytes(data, final=True)
    if encoding is None:
        raise EncodingError(f"not {SUPPORTED}: " + _first_bad(data, UTF8))
    try:
        return _decode(data, encoding), encoding
    except UnicodeDecodeError:
        raise EncodingError(f"mostly {encoding} but {_first_bad(data, encoding)}") from None


def _decode(data: bytes, encoding: str) -> str:
    """``data`` decoded strictly, without its BOM."""
    if encoding in (UTF16_LE, UTF16_BE):
        return data[2:].decode(encoding)
    return data.decode(encoding)


def binary_problem(data: bytes, final: bool = True) -> str | None:
    """Why ``data`` (a file's beginning; all of it when ``final``) is binary, not text; or None.

    Binary: a NUL byte (unless a UTF-16 BOM announces UTF-16), bytes that decode in none of
    the supported encodings, or more than a tenth of the characters (and at least four) being
    control characters (other than tab, line and page breaks) or undecodable.

    >>> binary_problem("病历\\n".encode("gb18030")) is None
    True
    >>> binary_problem(b"PK\\x03\\x04\\x00\\x00")
    'binary content (a NUL byte at offset 4)'
    """
    encoding = bom_encoding(data)
    if encoding in (UTF16_LE, UTF16_BE):
        text = data[2:].decode(encoding, errors="cemr.undecodable")
        if not final and text.endswith(_UNDECODABLE):
            text = text[:-1]  # a character cut by the end of the window
    else:
        nul = data.find(b"\0")
        if nul >= 0:
            return f"binary content (a NUL byte at offset {nul})"
        encoding = detect_bytes(data, final=final)
        if encoding is None:
            return f"binary content (not {SUPPORTED}: {_first_bad(data, UTF8)})"
        text = data.decode(UTF8 if encoding == UTF8_BOM else encoding, errors="replace")
    bad = sum(1 for c in text if c in (_UNDECODABLE, "\ufffd", "\x7f")
              or (c < " " and c not in _TEXT_CONTROLS))
    if bad >= _MIN_BAD and bad * 10 > len(text):
        return (f"binary content ({bad} of the first {len(text)} characters are control "
                f"characters or undecodable)")
    return None


def file_encoding(path: str | Path) -> str:
    """The encoding of the text file at ``path``.

    Raises ``BinaryFileError`` when its beginning is binary (see ``binary_problem``) and
    ``EncodingError`` when it is in none of ``ENCODINGS``.
    """
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF + 1)
    problem = binary_problem(head[:_SNIFF], final=len(head) <= _SNIFF)
    if problem is not None:
        raise BinaryFileError(problem)
    encoding = detect_encoding(path)
    if encoding is None:
        raise EncodingError(f"not {SUPPORTED}")
    return encoding


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
    if encoding in (UTF16_LE, UTF16_BE):
        yield from _iter_utf16_lines(path, encoding, keep_ends)
        return
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


def _iter_utf16_lines(path: str | Path, encoding: str, keep_ends: bool
                      ) -> Iterator[tuple[int, str | None, bytes]]:
    """``iter_lines`` for UTF-16: decoded incrementally, split on the decoded line breaks."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="cemr.undecodable")
    number = 0
    pending = ""
    with open(path, "rb") as fh:
        data = fh.read(_CHUNK)
        if data[:2] in (bom for bom, _ in _UTF16_BOMS):
            data = data[2:]
        while True:
            final = not data
            pending += decoder.decode(data, final=final)
            lines = pending.split("\n")
            pending = lines.pop()
            for line in lines:
                number += 1
                yield _utf16_line(number, line + "\n", encoding, keep_ends)
            if final:
                break
            data = fh.read(_CHUNK)
    if pending:
        yield _utf16_line(number + 1, pending, encoding, keep_ends)


def _utf16_line(number: int, line: str, encoding: str, keep_ends: bool
                ) -> tuple[int, str | None, bytes]:
    if not keep_ends:
        line = line[:-1] if line.endswith("\n") else line
        line = line[:-1] if line.endswith("\r") else line
    if _UNDECODABLE in line:
        return number, None, line.replace(_UNDECODABLE, "\ufffd").encode(encoding)
    return number, line, line.encode(encoding)


def head_lines(path: str | Path, *, limit: int = 20, max_bytes: int = 1 << 20
               ) -> tuple[str, list[str], bool]:
    """``(encoding, lines, cut)``: the first ``limit`` non-blank lines of a text file, cheaply.

    Only the first ``max_bytes`` bytes are read; a line cut by that end is dropped unless it is
    the only one (then ``cut`` is True and it is returned as far as it was read). Line ends are
    removed, a BOM skipped. Raises ``BinaryFileError`` / ``EncodingError`` like
    ``file_encoding``.
    """
    encoding = file_encoding(path)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    whole = len(data) <= max_bytes
    data = data[:max_bytes]
    if encoding in (UTF16_LE, UTF16_BE, UTF8_BOM):
        data = data[2 if encoding != UTF8_BOM else 3:]
    codec = UTF8 if encoding == UTF8_BOM else encoding
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(data, final=whole)
    pieces = text.split("\n")
    cut = False
    if not whole:
        last = pieces.pop()
        if not any(p.strip() for p in pieces) and last.strip():
            pieces, cut = [last], True
    lines = [p.rstrip("\r") for p in pieces if p.strip()]
    return encoding, lines[:limit], cut
