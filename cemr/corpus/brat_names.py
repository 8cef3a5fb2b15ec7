"""How cemr names what it writes as BRAT, so brat opens the directory, and how to map it back.

**File names.** A document id becomes a relative path: a ``/`` in the id makes a sub-directory
(brat shows it as a collection; the BRAT reader's ids are relative paths), and in each part
letters and digits of any script and ``-_.`` stay while every other character becomes ``_``.
A part that would be empty, ``..`` or hidden (a leading ``.``), or a directory named like a
``.txt``/``.ann`` file, is made safe the same way. ``病史特点-1`` and ``ccks2017/train/病史特点-1``
stay as they are. When the id had to change, the name ends in ``-`` and the first 8 hex digits of
the id's SHA-1 (``subtask1_training_part1:3`` -> ``subtask1_training_part1_3-bc596b3b``), so two
ids never share a name; two ids differing only in case (one file on a case-insensitive file
system) are told apart the same way (:class:`FileNamer`). The name is a function of the id
alone (:func:`file_stem`), whatever the order the documents come in, or the process writing them.

Every name that differs from its id is recorded in ``ID_MAP`` (``cemr_ids.jsonl``, one
``{"file": relative name without .txt/.ann, "id": document id}`` per line; absent when no name
changed): :func:`read_id_map` reads it back.

**Entity types.** brat stores types matching ``[A-Za-z0-9_-]+`` only (``annotation.conf``; it
rewrites any other name, every Chinese character to ``_``, so all five CCKS2017 types would
become one). A type that does not match is written as ``xn--`` and its Punycode (RFC 3492:
``疾病和诊断`` -> ``xn--0tro21br7l2a047w``), reversibly (:func:`original_type`); ``visual.conf``
gives brat the real name as the label it shows, so annotators see and choose ``疾病和诊断``.
An ASCII type such as ``DRUG`` is written unchanged.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .document import CorpusError

ID_MAP = "cemr_ids.jsonl"
ANNOTATION_CONF = "annotation.conf"
VISUAL_CONF = "visual.conf"
SIDE_FILES = (ANNOTATION_CONF, VISUAL_CONF, ID_MAP)  # what a cemr BRAT directory holds besides the pairs

_SAFE_PUNCT = "-_."
_STORAGE_RE = re.compile(r"[A-Za-z0-9_-]+")
_PUNY_PREFIX = "xn--"
_PUA = 0xE000  # where storage_type puts the ASCII characters brat cannot store
_DIGEST_CHARS = 8
_MAX_PART_BYTES = 200  # file systems allow 255 bytes a name; room for the digest and .txt
# brat's own colours are one green for every type: a distinct background per type instead
# (ColorBrewer Set3, light enough for black text)
_PALETTE = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
            "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f")


# ----------------------------------------------------------------------------------------------
# File names
# ----------------------------------------------------------------------------------------------


def id_digest(doc_id: str) -> str:
    """The first 8 hex digits of the SHA-1 of ``doc_id`` (UTF-8): what makes a changed name unique."""
    return hashlib.sha1(doc_id.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]


def _safe_part(part: str, is_dir: bool) -> str:
    out = "".join(ch if ch.isalnum() or ch in _SAFE_PUNCT else "_" for ch in part)
    if not out or out.startswith("."):
        out = "_" + out.lstrip(".") if out.strip(".") else "_" * max(1, len(out))
    if is_dir and out.lower().endswith((".txt", ".ann")):
        out += "_"  # a directory named a.txt would be the text file of the document a
    while len(out.encode("utf-8")) > _MAX_PART_BYTES:
        out = out[:-1]
    return out


def file_stem(doc_id: str) -> str:
    """The relative BRAT name of ``doc_id`` without ``.txt``/``.ann`` (module docstring): the id
    itself when it is already a safe relative path, else its safe form and ``-<digest>``.

    >>> file_stem("病史特点-1"), file_stem("ccks2017/train/病史特点-1")
    ('病史特点-1', 'ccks2017/train/病史特点-1')
    >>> file_stem("notes.txt:3")
    'notes.txt_3-f67484f3'
    """
    if not doc_id:
        raise ValueError("empty document id")
    parts = doc_id.split("/")
    safe = [_safe_part(p, is_dir=k < len(parts) - 1) for k, p in enumerate(parts)]
    stem = "/".join(safe)
    if stem == doc_id:
        return stem
    return f"{stem}-{id_digest(doc_id)}"


class FileNamer:
    """Unique names for a stream of document ids: :func:`file_stem`, and when that name (or a
    directory in it) is already taken up to case, ``-<digest>`` (then ``-2``, ``-3``...) and the
    first spelling of the directory. ``renamed`` lists ``(name, id)`` of every name that differs
    from its id, in the order written. A document id given twice is a ``ValueError``."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # casefolded name -> id
        self._dirs: dict[str, str] = {}  # casefolded directory -> its first spelling
        self.renamed: list[tuple[str, str]] = []
        self._ids: set[str] = set()

    def name(self, doc_id: str) -> str:
        if doc_id in self._ids:
            raise ValueError(f"duplicate document id {doc_id!r}")
        self._ids.add(doc_id)
        parts = file_stem(doc_id).split("/")
        for k in range(1, len(parts)):  # a directory already written in another case: that one
            spelled = self._dirs.setdefault("/".join(parts[:k]).casefold(), "/".join(parts[:k]))
            parts[:k] = spelled.split("/")
        stem = "/".join(parts)
        if stem.casefold() in self._files:
            digest = id_digest(doc_id)
            base = stem if stem.endswith(f"-{digest}") else f"{stem}-{digest}"
            stem, n = base, 1
            while stem.casefold() in self._files:
                n += 1
                stem = f"{base}-{n}"
        self._files[stem.casefold()] = doc_id
        if stem != doc_id:
            self.renamed.append((stem, doc_id))
        return stem


def id_map_lines(renamed: Iterable[tuple[str, str]]) -> Iterator[str]:
    """The lines of ``ID_MAP`` for ``(name, id)`` pairs."""
    for name, doc_id in renamed:
        yield json.dumps({"file": name, "id": doc_id}, ensure_ascii=False) + "\n"


def read_id_map(root: str | Path) -> dict[str, str]:
    """``{relative name: document id}`` from ``root/ID_MAP`` (empty when there is none). A line
    that is not ``{"file": str, "id": str}``, or a name or id given twice, raises ``CorpusError``
    naming the line."""
    path = Path(root) / ID_MAP
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    ids: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(str(path), number, f"not JSON: {exc.msg}") from None
            if not (isinstance(record, dict) and isinstance(record.get("file"), str)
                    and isinstance(record.get("id"), str) and record["file"] and record["id"]):
                raise CorpusError(str(path), number, 'expected {"file": NAME, "id": DOCUMENT_ID}')
            if record["file"] in out:
                raise CorpusError(str(path), number, f"file {record['file']!r} listed twice")
            if record["id"] in ids:
                raise CorpusError(str(path), number, f"document id {record['id']!r} also on line "
                                                     f"{ids[record['id']]}")
            out[record["file"]] = record["id"]
            ids[record["id"]] = number
    return out


# ----------------------------------------------------------------------------------------------
# Entity types and brat's configuration
# ----------------------------------------------------------------------------------------------


def storage_type(type_: str) -> str:
    """How ``type_`` is written in ``.ann`` and ``annotation.conf``: itself when brat can store
    it (``[A-Za-z0-9_-]+``, not all hyphens, not starting ``xn--``), else ``xn--`` + Punycode of
    it, where an ASCII character brat cannot store (``:``, a space...) first becomes the
    private-use character ``U+E000 + its code`` so the result is ``[a-z0-9_-]`` only. A type
    holding such a private-use character itself (U+E000-U+E07F) cannot be stored: ``ValueError``.

    >>> storage_type("DRUG"), storage_type("疾病和诊断")
    ('DRUG', 'xn--0tro21br7l2a047w')
    """
    if not type_:
        raise ValueError("empty entity type")
    if (_STORAGE_RE.fullmatch(type_) and type_.strip("-")
            and not type_.lower().startswith(_PUNY_PREFIX)):
        return type_
    if any(_PUA <= ord(ch) < _PUA + 128 for ch in type_):
        raise ValueError(f"entity type {type_!r} holds a private-use character U+E000-U+E07F: it cannot be "
                         f"written to BRAT")
    shifted = "".join(chr(_PUA + ord(ch)) if ord(ch) < 128 and not _STORAGE_RE.fullmatch(ch) else ch
                      for ch in type_)
    return _PUNY_PREFIX + shifted.encode("punycode").decode("ascii")


def original_type(stored: str) -> str:
    """Inverse of :func:`storage_type` (a type not starting ``xn--``, or not valid Punycode after
    it, is returned as written)."""
    if not stored.lower().startswith(_PUNY_PREFIX):
        return stored
    try:
        decoded = stored[len(_PUNY_PREFIX):].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return stored
    return "".join(chr(ord(ch) - _PUA) if _PUA <= ord(ch) < _PUA + 128 else ch for ch in decoded)


def annotation_conf(types: Sequence[str]) -> str:
    """brat's ``annotation.conf`` declaring ``types`` (in their storage form) as entities, with
    the other three sections it expects, empty."""
    entities = "".join(f"{storage_type(t)}\n" for t in types)
    return f"[entities]\n{entities}\n[relations]\n\n[events]\n\n[attributes]\n"


def visual_conf(types: Sequence[str]) -> str:
    """brat's ``visual.conf``: each type's real name as its label, and a background colour each."""
    labels = "".join(f"{storage_type(t)} | {t}\n" for t in types)
    colours = "".join(f"{storage_type(t)}\tbgColor:{_PALETTE[k % len(_PALETTE)]}\n" for k, t in enumerate(types))
    return (f"[labels]\n{labels}\n[drawing]\n"
            "SPAN_DEFAULT\tfgColor:black, bgColor:lightgreen, borderColor:darken\n"
            "ARC_DEFAULT\tcolor:black, arrowHead:triangle-5\n"
            f"{colours}")
