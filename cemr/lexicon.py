"""Medical lexicon (term -> entity type) and bidirectional maximum matching (BMM).

The dictionary feature of BiLM_BNER tags every char ``B-TYPE`` / ``I-TYPE`` / ``O`` by matching a
medical lexicon against the text. This module builds that lexicon and does the matching:

* **Building.** Votes ``term -> {type: count}`` are collected from public term lists (one vote per
  term per list) and from the mentions of the training documents (one vote per mention); every
  candidate term first passes a noise filter (:class:`TermFilter`). Each term then gets one type:
  the type with the most votes, ties broken by a fixed type order (the preset's order, else
  alphabetical). Every input line and mention is accounted for in a :class:`LexiconReport`
  (kept, duplicate, or rejected with a reason); nothing is dropped silently.
* **Matching.** One trie (nested dicts) over all terms; a single left-to-right scan walks the trie
  from every position and records, per position, the longest term starting there (forward
  maximum matching, FMM) and the longest term ending there (backward maximum matching, BMM).
  :func:`bmm` then picks FMM or BMM wherever the two disagree, by the rules in :func:`bmm`.
* **Out of fold.** A lexicon holding every training mention marks every gold entity of a training
  sentence, so a tagger learns to trust the feature blindly (see "A measured pitfall" in
  ``method.md``). :class:`FoldedLexicon` assigns each training document to one of ``k`` folds by a
  stable hash (:func:`doc_fold`) and matches a training document against a lexicon built without
  its own fold's mentions (terms of the external lists always stay). All folds share one trie;
  only a small per-fold table ``term id -> type`` differs.
* **Presets.** ``ccks2017`` and ``yidu`` map the shared public lists (``$CEMR_DATA_DIR/lexicons``)
  to each corpus's types (see :data:`PRESETS` for the mapping and the measurements behind it);
  ``ccks2017_all`` and ``yidu_all`` add the noisy kyzhouhzau fragment lists.

Entry points: :func:`build_lexicon` / :func:`build_folded_lexicon` (from a ``LexiconConfig``),
:func:`bmm` (typed spans) and :func:`bmm_tags` (BIO per char), :meth:`Lexicon.save` / ``load``.

All offsets are 0-based char offsets; spans are end exclusive (``text[start:end]``), like
:class:`cemr.corpus.document.Span`.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cemr.config import LexiconConfig, LexiconSource, data_dir, expand_path
from cemr.corpus.document import CorpusError, Document, Span

__all__ = [
    "TermFilter",
    "SourceReport",
    "LexiconReport",
    "Preset",
    "PRESETS",
    "get_preset",
    "lexicons_dir",
    "Lexicon",
    "LexiconBuilder",
    "builder_from_config",
    "build_lexicon",
    "read_source",
    "resolve_type",
    "TermIndex",
    "Matcher",
    "forward_max_match",
    "backward_max_match",
    "choose_words",
    "bmm_words",
    "bmm",
    "bmm_tags",
    "bio_labels",
    "doc_fold",
    "FoldedLexicon",
    "build_folded_lexicon",
]

# ----------------------------------------------------------------------------------------------
# Noise filter
# ----------------------------------------------------------------------------------------------

# Stripped from both ends of every candidate term: ASCII/Unicode whitespace, the BOM, NBSP.
_STRIP = " \t\r\n\f\v\u3000\u00a0\ufeff\u200b"


def _is_digit_or_punct(term: str) -> bool:
    """True when every char is a number, punctuation or symbol (Unicode categories N*, P*, S*)."""
    return all(unicodedata.category(c)[0] in "NPS" for c in term)


@dataclass(frozen=True)
class TermFilter:
    """The noise filter every candidate term passes (list entries and training mentions alike).

    Rejection reasons, checked in this order: ``empty`` (nothing left after stripping
    whitespace), ``whitespace`` (whitespace inside the term), ``too_short`` (< ``min_length``
    chars), ``too_long`` (> ``max_length`` chars), ``stopword`` (exactly one of ``stopwords``),
    ``digits_punct`` (only digits, punctuation and symbols, e.g. ``"12.5"``, ``"（）"``).
    """

    min_length: int = 2
    max_length: int = 30
    stopwords: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ValueError(
                f"lexicon term lengths: need 1 <= min_length <= max_length, got "
                f"min_length={self.min_length}, max_length={self.max_length}"
            )

    @classmethod
    def from_config(cls, cfg: LexiconConfig, extra_stopwords: Iterable[str] = ()) -> "TermFilter":
        return cls(cfg.min_length, cfg.max_length, frozenset(cfg.stopwords) | frozenset(extra_stopwords))

    def clean(self, raw: str) -> tuple[str, str | None]:
        """``(term, None)`` for a kept term (surrounding whitespace stripped), else ``(term, reason)``."""
        term = raw.strip(_STRIP)
        if not term:
            return term, "empty"
        if any(c.isspace() for c in term):
            return term, "whitespace"
        if len(term) < self.min_length:
            return term, "too_short"
        if len(term) > self.max_length:
            return term, "too_long"
        if term in self.stopwords:
            return term, "stopword"
        if _is_digit_or_punct(term):
            return term, "digits_punct"
        return term, None


# ----------------------------------------------------------------------------------------------
# Accounting
# ----------------------------------------------------------------------------------------------


@dataclass
class SourceReport:
    """What one source contributed: ``read == kept + duplicates + sum(rejected.values())``.

    ``read`` counts input lines (term lists) or mentions (training spans); ``duplicates`` a term
    seen again in the same list (one vote per list); ``skipped`` says why a whole source was not
    used (an untyped list with no type configured); ``retyped`` counts preset retyping rules applied.
    """

    name: str
    path: str = ""
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    retyped: int = 0
    rejected: Counter = field(default_factory=Counter)
    types: Counter = field(default_factory=Counter)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "read": self.read,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "retyped": self.retyped,
            "rejected": dict(sorted(self.rejected.items())),
            "types": dict(sorted(self.types.items())),
            "skipped": self.skipped,
        }


@dataclass
class LexiconReport:
    """How a lexicon was built: per-source accounting, type conflicts and the final counts.

    ``conflicts`` counts terms that received votes for more than one type; ``ties`` those among
    them whose top vote was tied (resolved by the type order); ``conflict_examples`` keeps the
    first few ``(term, {type: votes}, chosen)`` for inspection.
    """

    sources: list[SourceReport] = field(default_factory=list)
    terms: int = 0
    type_counts: Counter = field(default_factory=Counter)
    conflicts: int = 0
    ties: int = 0
    conflict_examples: list[tuple[str, dict[str, int], str]] = field(default_factory=list)
    max_examples: int = 20

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [s.to_dict() for s in self.sources],
            "terms": self.terms,
            "type_counts": dict(sorted(self.type_counts.items())),
            "conflicts": self.conflicts,
            "ties": self.ties,
            "conflict_examples": [list(e) for e in self.conflict_examples],
        }


# ----------------------------------------------------------------------------------------------
# Votes -> one type per term
# ----------------------------------------------------------------------------------------------

Votes = dict[str, Counter]


def _type_rank(type_order: Sequence[str]) -> Callable[[str], tuple[int, str]]:
    index = {t: i for i, t in enumerate(type_order)}
    return lambda t: (index.get(t, len(index)), t)


def resolve_type(votes: Mapping[str, int], type_order: Sequence[str] = ()) -> str:
    """The type with the most votes; a tie goes to the type earliest in ``type_order`` (types not
    listed come after the listed ones, alphabetically)."""
    if not votes:
        raise ValueError("resolve_type: no votes")
    rank = _type_rank(type_order)
    return min(votes, key=lambda t: (-votes[t], rank(t)))


def resolve(votes: Mapping[str, Mapping[str, int]], type_order: Sequence[str] = (),
            report: LexiconReport | None = None) -> dict[str, str]:
    """``term -> type`` for every term with at least one positive vote; conflicts go to ``report``."""
    out: dict[str, str] = {}
    for term, counter in votes.items():
        positive = {t: c for t, c in counter.items() if c > 0}
        if not positive:
            continue
        chosen = resolve_type(positive, type_order)
        out[term] = chosen
        if report is not None and len(positive) > 1:
            report.conflicts += 1
            top = sorted(positive.values(), reverse=True)
            report.ties += int(top[0] == top[1])
            if len(report.conflict_examples) < report.max_examples:
                report.conflict_examples.append((term, dict(sorted(positive.items())), chosen))
    return out


# ----------------------------------------------------------------------------------------------
# Reading term lists
# ----------------------------------------------------------------------------------------------


def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 file (a leading BOM dropped, CR/LF stripped). Raises CorpusError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CorpusError(path, None, f"cannot read lexicon file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusError(path, line, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def _parse_entry(src: LexiconSource, path: str, lineno: int, line: str) -> tuple[str, str | None]:
    """``(raw term, code)`` of one line of a list; code is None when the format has none."""
    if src.format == "csv":
        if "," not in line:
            if not line.strip(_STRIP):
                return line, None
            raise CorpusError(path, lineno, f"expected 'term,CODE', got {line[:60]!r}")
        term, code = line.rsplit(",", 1)
        return term, code.strip(_STRIP)
    if src.format == "lines":
        if src.type_map:
            if "\t" not in line:
                if not line.strip(_STRIP):
                    return line, None
                raise CorpusError(path, lineno, f"expected 'term<TAB>CODE' (type_map is set), got {line[:60]!r}")
            term, rest = line.split("\t", 1)
            return term, rest.split("\t", 1)[0].strip(_STRIP)
        return line.split("\t", 1)[0], None
    raise CorpusError(path, None, f"unknown lexicon source format {src.format!r} (expected lines or csv)")


Retype = Callable[[str, str], str]


def read_source(src: LexiconSource, term_filter: TermFilter, votes: Votes,
                retype: Retype | None = None, name: str | None = None) -> SourceReport:
    """Add one vote per distinct kept ``(term, type)`` of the list ``src`` to ``votes``; return its
    accounting (a repeated entry counts as a duplicate; a list typing a term two ways votes twice).

    Typing: ``csv`` rows are ``term,CODE`` and ``lines`` rows ``term[<TAB>extra]``. With a
    ``type_map``, the CODE (csv) or the first extra column (lines) is mapped through it, falling
    back to ``src.type``; a code that maps to nothing is rejected as ``unmapped_code``. Without a
    ``type_map`` every term gets ``src.type``; a list with neither is skipped whole (reported).
    ``retype(term, type)`` may refine the type (preset rules, counted as ``retyped``).
    """
    path = expand_path(src.path) or ""
    rep = SourceReport(name=name or os.path.basename(path), path=path)
    if src.format not in ("lines", "csv"):
        raise CorpusError(path, None, f"unknown lexicon source format {src.format!r} (expected lines or csv)")
    if src.type is None and not src.type_map:
        if not os.path.isfile(path):
            raise CorpusError(path, None, "lexicon file not found")
        rep.skipped = "untyped list and no type configured"
        return rep
    seen: set[tuple[str, str]] = set()
    for lineno, line in enumerate(_read_lines(path), start=1):
        rep.read += 1
        raw, code = _parse_entry(src, path, lineno, line)
        term, reason = term_filter.clean(raw)
        if reason is None:
            type_ = src.type_map.get(code, src.type) if code is not None else src.type
            if type_ is None:
                reason = "unmapped_code"
        if reason is not None:
            rep.rejected[reason] += 1
            continue
        if retype is not None:
            new = retype(term, type_)
            rep.retyped += int(new != type_)
            type_ = new
        if (term, type_) in seen:
            rep.duplicates += 1
            continue
        seen.add((term, type_))
        votes.setdefault(term, Counter())[type_] += 1
        rep.kept += 1
        rep.types[type_] += 1
    return rep


def mention_votes(docs: Iterable[Document], term_filter: TermFilter,
                  into: Callable[[Document], Votes]) -> SourceReport:
    """One vote per training mention (``doc.text[span.start:span.end]``, filtered) into the vote
    table ``into(doc)`` chooses for the document (the global table, or its fold's)."""
    rep = SourceReport(name="train_mentions")
    for doc in docs:
        table = into(doc)
        for span in doc.spans:
            rep.read += 1
            if span.end > len(doc.text):
                raise CorpusError(doc.source or doc.id, None,
                                  f"span [{span.start}, {span.end}) beyond the text ({len(doc.text)} chars)")
            term, reason = term_filter.clean(doc.text[span.start:span.end])
            if reason is not None:
                rep.rejected[reason] += 1
                continue
            table.setdefault(term, Counter())[span.type] += 1
            rep.kept += 1
            rep.types[span.type] += 1
    return rep


# ----------------------------------------------------------------------------------------------
# Presets: the shared public lists mapped to a corpus's entity types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named set of the public lists under ``<data_dir>/lexicons`` with their codes mapped to
    one corpus's types.

    ``types`` is the corpus's type set in tie-break order; ``sources`` the lists (paths relative
    to the lexicons directory); ``stopword_files`` lists whose lines are added to the stop words;
    ``retype`` rules ``(regex, from_type, to_type)`` refine list types (not training mentions).
    """

    name: str
    types: tuple[str, ...]
    sources: tuple[LexiconSource, ...]
    stopword_files: tuple[str, ...] = ()
    retype: tuple[tuple[str, str, str], ...] = ()

    def resolved_sources(self, root: str) -> list[LexiconSource]:
        return [LexiconSource(os.path.join(root, s.path), s.format, s.type, dict(s.type_map)) for s in self.sources]

    def retyper(self) -> Retype | None:
        if not self.retype:
            return None
        rules = [(re.compile(p), a, b) for p, a, b in self.retype]

        def retype(term: str, type_: str) -> str:
            for pattern, from_type, to_type in rules:
                if type_ == from_type and pattern.search(term):
                    return to_type
            return type_

        return retype


_QA = "QASystemOnMedicalKG_dict/"
_KY = "kyzhouhzau_CCKS_CRF_dic/"

# Tie-break order (most votes wins; on a tie the earlier type). Anatomy first: organ names recur
# in the other lists (medical_ner_dict's ORG rows, symptom lists) and are anatomy in both corpora.
# CCKS2017 then puts 症状和体征 before 疾病和诊断: it annotates many names of the QASystem disease
# list as symptoms (咳嗽, 疱疹, 肿胀, 头痛); matched against its gold training set, the lists-only
# lexicon reached precision 0.518 with this order and 0.453 with disease first. Yidu has no
# symptom type; there disease comes before the checks, surgery and drugs.
_CCKS2017_TYPES = ("身体部位", "症状和体征", "疾病和诊断", "检查和检验", "治疗")
_YIDU_TYPES = ("解剖部位", "疾病和诊断", "影像检查", "实验室检验", "手术", "药物")

# Imaging checks (CT, MRI, ultrasound, X-ray, angiography, ECG...): Yidu-S4K labels these
# 影像检查 (its most frequent ones: CT, 腹部CT, PET-CT, 心电图, 彩超, 胸片, MRI, B超); the check
# lists do not separate them from laboratory tests, so the yidu preset retypes them by keyword.
_IMAGING = (r"(?<![A-Za-z])(CT|MRI?|MRCP|MRA|PET|DSA|CR|DR|ECT|SPECT)(?![A-Za-z])|超声|B超|彩超|多普勒|造影|"
            r"X线|X光|平片|摄片|胸片|核磁|磁共振|显像|扫描|平扫|心电图")

_CCKS2017_CODES = {
    "DIS": "疾病和诊断", "SYM": "症状和体征", "SGN": "症状和体征", "REG": "身体部位", "ORG": "身体部位",
    "TES": "检查和检验", "DRU": "治疗", "SUR": "治疗", "PRE": "治疗", "PRP": "治疗",
}
_YIDU_CODES = {
    "DIS": "疾病和诊断", "REG": "解剖部位", "ORG": "解剖部位", "TES": "实验室检验", "DRU": "药物", "SUR": "手术",
}
_UNTYPED = (
    LexiconSource("THUOCL_medical.txt", "lines", None),
    LexiconSource("dict_medical_source_words.txt", "lines", None),
)
# The kyzhouhzau CCKS_CRF dic files are jieba fragments of all kinds of words rather than typed
# terms (drugs.txt holds 检查, 治疗, 咳嗽; shoushu.txt holds 术后, 淋巴结, 异常). Matched alone
# against the gold training sets (BMM, exact span and type) their precision was: CCKS2017 drugs
# 0.014, shoushu 0.004, jiepou 0.20, zhenzhaung 0.20; Yidu drugs 0.020, shoushu 0.000, jiepou
# 0.093. Added to out-of-fold training mentions they lowered dictionary-only F1 by 3-9 points
# (CCKS2017) and 8-20 points (Yidu), while medical_ner_dict.csv and the QASystemOnMedicalKG lists
# cost 0-2 points. So the plain presets leave them out; the ``*_all`` presets add them.
_CCKS2017_KY = (
    LexiconSource(_KY + "jiepou.txt", "lines", "身体部位"),
    LexiconSource(_KY + "zhenzhaung.txt", "lines", "症状和体征"),
    LexiconSource(_KY + "drugs.txt", "lines", "治疗"),
    LexiconSource(_KY + "shoushu.txt", "lines", "治疗"),
)
_YIDU_KY = (
    LexiconSource(_KY + "jiepou.txt", "lines", "解剖部位"),
    LexiconSource(_KY + "drugs.txt", "lines", "药物"),
    LexiconSource(_KY + "shoushu.txt", "lines", "手术"),
)
# CCKS2017 types: 身体部位, 检查和检验, 症状和体征, 治疗 (drugs, surgery, therapies), 疾病和诊断.
# medical_ner_dict.csv codes: DIS -> 疾病和诊断; SYM, SGN (signs) -> 症状和体征; REG, ORG (organs)
# -> 身体部位; TES -> 检查和检验; DRU, SUR, PRE, PRP (procedures, prescriptions) -> 治疗; the other
# codes (AT, BFL, CL, Dur, FW, NBP, PT: negation, duration, persons...) are rejected as unmapped.
# QASystemOnMedicalKG: disease, symptom, check, drug (-> 治疗); food, producer and department are
# no entity type here; deny.txt (negation cue words) become stop words. kyzhouhzau (``_all``
# only): jiepou -> 身体部位, zhenzhaung -> 症状和体征, drugs and shoushu -> 治疗.
# THUOCL_medical and dict_medical_source_words mix types: listed untyped, so they are skipped
# (and reported as skipped); configure a source with a type to use them.
_CCKS2017_SOURCES = (
    LexiconSource("medical_ner_dict.csv", "csv", None, _CCKS2017_CODES),
    LexiconSource(_QA + "disease.txt", "lines", "疾病和诊断"),
    LexiconSource(_QA + "symptom.txt", "lines", "症状和体征"),
    LexiconSource(_QA + "check.txt", "lines", "检查和检验"),
    LexiconSource(_QA + "drug.txt", "lines", "治疗"),
) + _UNTYPED
# Yidu-S4K types: 解剖部位, 疾病和诊断, 药物, 实验室检验, 手术, 影像检查. No symptom type, so the
# symptom lists are left out and SYM/SGN are unmapped. DIS, disease -> 疾病和诊断; REG, ORG ->
# 解剖部位; DRU, drug -> 药物; SUR -> 手术; TES, check -> 实验室检验, then the imaging checks (the
# _IMAGING keywords) -> 影像检查; PRE/PRP (generic procedures) are unmapped. kyzhouhzau (``_all``
# only): jiepou -> 解剖部位, drugs -> 药物, shoushu -> 手术.
_YIDU_SOURCES = (
    LexiconSource("medical_ner_dict.csv", "csv", None, _YIDU_CODES),
    LexiconSource(_QA + "disease.txt", "lines", "疾病和诊断"),
    LexiconSource(_QA + "check.txt", "lines", "实验室检验"),
    LexiconSource(_QA + "drug.txt", "lines", "药物"),
) + _UNTYPED
_DENY = (_QA + "deny.txt",)
_YIDU_RETYPE = ((_IMAGING, "实验室检验", "影像检查"),)

PRESETS: dict[str, Preset] = {
    "ccks2017": Preset("ccks2017", _CCKS2017_TYPES, _CCKS2017_SOURCES, _DENY),
    "ccks2017_all": Preset("ccks2017_all", _CCKS2017_TYPES, _CCKS2017_SOURCES + _CCKS2017_KY, _DENY),
    "yidu": Preset("yidu", _YIDU_TYPES, _YIDU_SOURCES, _DENY, _YIDU_RETYPE),
    "yidu_all": Preset("yidu_all", _YIDU_TYPES, _YIDU_SOURCES + _YIDU_KY, _DENY, _YIDU_RETYPE),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown lexicon preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def lexicons_dir() -> str:
    """``<data_dir>/lexicons``, where the presets' public lists live."""
    return os.path.join(data_dir(), "lexicons")


# ----------------------------------------------------------------------------------------------
# Trie and matching
# ----------------------------------------------------------------------------------------------

# A trie node is a tuple ``(children, term_id)``: ``children`` maps a char to the next node,
# ``term_id`` is the index of the term ending at this node, or -1. Leaves share one empty dict.
_NO_CHILDREN: dict = {}


class TermIndex:
    """A trie over a fixed list of distinct terms; ``terms[i]`` has term id ``i``.

    The trie carries no types: a :class:`Matcher` pairs it with a table ``term id -> type or None``,
    so several lexicons over the same terms (the folds) share one trie.
    """

    def __init__(self, terms: Iterable[str]):
        self.terms: list[str] = list(terms)
        build: dict = {}
        for tid, term in enumerate(self.terms):
            if not term:
                raise ValueError("TermIndex: empty term")
            node = build
            for ch in term:
                node = node.setdefault(ch, {})
            if None in node:
                raise ValueError(f"TermIndex: duplicate term {term!r}")
            node[None] = tid
        self.root: dict[str, tuple[dict, int]] = self._freeze(build)
        self.max_length = max((len(t) for t in self.terms), default=0)

    @classmethod
    def _freeze(cls, build: dict) -> dict:
        out = {}
        for ch, child in build.items():
            if ch is None:
                continue
            tid = child.get(None, -1)
            has_children = len(child) > (1 if tid >= 0 else 0)
            out[ch] = (cls._freeze(child) if has_children else _NO_CHILDREN, tid)
        return out


class Matcher:
    """A :class:`TermIndex` plus a table ``term id -> type`` (None: the term is switched off)."""

    def __init__(self, index: TermIndex, types: Sequence[str | None]):
        if len(types) != len(index.terms):
            raise ValueError(f"Matcher: {len(types)} types for {len(index.terms)} terms")
        self.index = index
        self.types = list(types)

    def scan(self, text: str) -> tuple[list[int], list[str | None], list[int], list[str | None]]:
        """Walk the trie from every position of ``text`` (``n`` chars) in one pass.

        Returns four lists: ``fwd_end[i]`` the end of the longest term starting at ``i`` (0 when
        none) and ``fwd_type[i]`` its type (length ``n``); ``bwd_start[j]`` the start of the
        longest term ending at ``j`` (-1 when none) and ``bwd_type[j]`` its type (length ``n+1``).
        """
        n = len(text)
        types = self.types
        fwd_end = [0] * n
        fwd_type: list[str | None] = [None] * n
        bwd_start = [-1] * (n + 1)
        bwd_type: list[str | None] = [None] * (n + 1)
        root_get = self.index.root.get
        for i in range(n):
            entry = root_get(text[i])
            j = i
            while entry is not None:
                children, tid = entry
                j += 1
                if tid >= 0:
                    type_ = types[tid]
                    if type_ is not None:
                        fwd_end[i] = j
                        fwd_type[i] = type_
                        if bwd_start[j] < 0:  # i grows: the first start found is the longest term
                            bwd_start[j] = i
                            bwd_type[j] = type_
                if j == n:
                    break
                entry = children.get(text[j])
        return fwd_end, fwd_type, bwd_start, bwd_type


Word = tuple[int, int, str]  # (start, end, type) of one lexicon-matched segment


def _fmm_words(fwd_end: list[int], fwd_type: list[str | None]) -> list[Word]:
    words: list[Word] = []
    n = len(fwd_end)
    i = 0
    while i < n:
        e = fwd_end[i]
        if e:
            words.append((i, e, fwd_type[i]))  # type: ignore[arg-type]
            i = e
        else:
            i += 1
    return words


def _bmm_words(bwd_start: list[int], bwd_type: list[str | None]) -> list[Word]:
    words: list[Word] = []
    j = len(bwd_start) - 1
    while j > 0:
        s = bwd_start[j]
        if s >= 0:
            words.append((s, j, bwd_type[j]))  # type: ignore[arg-type]
            j = s
        else:
            j -= 1
    words.reverse()
    return words


def _segments(words: list[Word], start: int, end: int) -> list[tuple[int, int]]:
    """The full segmentation of ``[start, end)``: the words plus every other char on its own."""
    out: list[tuple[int, int]] = []
    pos = start
    for s, e, _ in words:
        out.extend((k, k + 1) for k in range(pos, s))
        out.append((s, e))
        pos = e
    out.extend((k, k + 1) for k in range(pos, end))
    return out


def _matcher_of(lex: "Lexicon | Matcher") -> Matcher:
    if isinstance(lex, Matcher):
        return lex
    if isinstance(lex, Lexicon):
        return lex.matcher
    raise TypeError(f"expected a Lexicon or Matcher, got {type(lex).__name__}")


def forward_max_match(text: str, lex: "Lexicon | Matcher") -> list[tuple[int, int]]:
    """Forward maximum matching: from the left, take the longest lexicon term starting here, else
    one char. Returns the whole segmentation as ``(start, end)`` pairs (end exclusive)."""
    fwd_end, fwd_type, _, _ = _matcher_of(lex).scan(text)
    return _segments(_fmm_words(fwd_end, fwd_type), 0, len(text))


def backward_max_match(text: str, lex: "Lexicon | Matcher") -> list[tuple[int, int]]:
    """Backward maximum matching: from the right, take the longest lexicon term ending here, else
    one char. Returns the whole segmentation as ``(start, end)`` pairs, left to right."""
    _, _, bwd_start, bwd_type = _matcher_of(lex).scan(text)
    return _segments(_bmm_words(bwd_start, bwd_type), 0, len(text))


def _score(words: list[Word], length: int) -> tuple[int, int, int]:
    """Rule key of one segmentation of a region of ``length`` chars (smaller is better):
    (number of segments, number of single-char segments, -chars inside lexicon words)."""
    matched = sum(e - s for s, e, _ in words)
    unmatched = length - matched
    singles = unmatched + sum(1 for s, e, _ in words if e - s == 1)
    return len(words) + unmatched, singles, -matched


def choose_words(fmm: list[Word], bmm_: list[Word]) -> list[Word]:
    """Merge FMM and BMM word lists, choosing per disagreement region.

    Overlapping words of the two lists chain into regions ``[lo, hi)`` whose ends are boundaries of
    both segmentations; outside them both segmentations are the same single chars. In each region
    where they differ, the rules in order: (1) fewer segments, (2) fewer single-char segments,
    (3) more chars inside lexicon words; (4) a full tie goes to BMM (customary for Chinese). For a
    text with a single disagreement this is exactly the textbook whole-sentence choice; deciding
    per region keeps one hard sentence from deciding a whole multi-sentence record.
    """
    if fmm == bmm_:
        return fmm
    out: list[Word] = []
    i = j = 0
    nf, nb = len(fmm), len(bmm_)
    while i < nf or j < nb:
        # start a region at the leftmost next word, then absorb every word overlapping it
        if j >= nb or (i < nf and fmm[i][0] <= bmm_[j][0]):
            lo, hi = fmm[i][0], fmm[i][1]
        else:
            lo, hi = bmm_[j][0], bmm_[j][1]
        i0, j0 = i, j
        grown = True
        while grown:
            grown = False
            while i < nf and fmm[i][0] < hi:
                hi = max(hi, fmm[i][1])
                i += 1
                grown = True
            while j < nb and bmm_[j][0] < hi:
                hi = max(hi, bmm_[j][1])
                j += 1
                grown = True
        f_words, b_words = fmm[i0:i], bmm_[j0:j]
        if f_words == b_words or _score(f_words, hi - lo) >= _score(b_words, hi - lo):
            out.extend(b_words)
        else:
            out.extend(f_words)
    return out


def bmm_words(text: str, lex: "Lexicon | Matcher") -> list[Word]:
    """Bidirectional maximum matching: the lexicon words ``(start, end, type)`` of the chosen
    segmentation (see :func:`choose_words` for the rules), left to right, non-overlapping."""
    fwd_end, fwd_type, bwd_start, bwd_type = _matcher_of(lex).scan(text)
    return choose_words(_fmm_words(fwd_end, fwd_type), _bmm_words(bwd_start, bwd_type))


def bmm(text: str, lex: "Lexicon | Matcher") -> list[Span]:
    """Bidirectional maximum matching: the lexicon-matched segments as typed spans (end exclusive).

    Chars outside any lexicon word are not returned. FMM vs BMM is decided per disagreement
    region by: fewer segments, then fewer single-char segments, then more matched chars, then BMM.
    """
    return [Span(s, e, t) for s, e, t in bmm_words(text, lex)]


def bmm_tags(text: str, lex: "Lexicon | Matcher") -> list[str]:
    """One BIO tag per char of ``text`` from :func:`bmm`: ``B-TYPE``, ``I-TYPE`` or ``O`` (length n)."""
    tags = ["O"] * len(text)
    for s, e, t in bmm_words(text, lex):
        tags[s] = "B-" + t
        if e - s > 1:
            tags[s + 1:e] = ["I-" + t] * (e - s - 1)
    return tags


def bio_labels(types: Iterable[str]) -> list[str]:
    """The tag vocabulary of :func:`bmm_tags` for these types: ``["O", "B-T1", "I-T1", ...]``, sorted
    by type, so a feature embedding can fix its indices before any text is seen."""
    out = ["O"]
    for t in sorted(set(types)):
        out += ["B-" + t, "I-" + t]
    return out


# ----------------------------------------------------------------------------------------------
# The lexicon
# ----------------------------------------------------------------------------------------------

_HEADER = "# cemr lexicon: term<TAB>type, UTF-8, sorted by term"


class Lexicon:
    """An immutable mapping ``term -> entity type`` with a trie matcher built on first use.

    ``votes`` (``term -> {type: count}``) is kept when the lexicon was built from votes, so
    out-of-fold variants can recombine them (:class:`FoldedLexicon`); ``report`` says how it was
    built. Build one with :func:`build_lexicon`, :class:`LexiconBuilder`, ``Lexicon(dict)`` or
    :meth:`load`.
    """

    def __init__(self, terms: Mapping[str, str], *, votes: Votes | None = None,
                 report: LexiconReport | None = None, matcher: Matcher | None = None):
        for term, type_ in terms.items():
            if not term or not type_:
                raise ValueError(f"Lexicon: empty term or type in ({term!r}, {type_!r})")
        self._terms = dict(terms)
        self.votes = votes
        self.report = report
        self._matcher = matcher

    def __getstate__(self) -> dict[str, Any]:
        # the trie is rebuilt on first use after unpickling: faster than unpickling it (0.65 s vs
        # 1.8 s for the 38k-term ccks2017 preset) and 4 MB less to ship to a worker
        state = dict(self.__dict__)
        state["_matcher"] = None
        return state

    # mapping-like access
    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return term in self._terms

    def __getitem__(self, term: str) -> str:
        return self._terms[term]

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms)

    def get(self, term: str, default: str | None = None) -> str | None:
        return self._terms.get(term, default)

    def items(self) -> Iterable[tuple[str, str]]:
        return self._terms.items()

    def types(self) -> list[str]:
        return sorted(set(self._terms.values()))

    def type_counts(self) -> Counter:
        return Counter(self._terms.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lexicon) and self._terms == other._terms

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} terms, types={dict(sorted(self.type_counts().items()))})"

    @property
    def matcher(self) -> Matcher:
        if self._matcher is None:
            index = TermIndex(sorted(self._terms))
            self._matcher = Matcher(index, [self._terms[t] for t in index.terms])
        return self._matcher

    # persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write ``term<TAB>type`` lines sorted by term, after one ``#`` header line (UTF-8)."""
        lines = [f"{_HEADER}; {len(self)} terms"]
        for term in sorted(self._terms):
            type_ = self._terms[term]
            if any(c in term + type_ for c in "\t\r\n") or term.startswith("#"):
                raise ValueError(f"Lexicon.save: term {term!r} / type {type_!r} cannot be written as TSV")
            lines.append(f"{term}\t{type_}")
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        """Read a file written by :meth:`save`; a bad line raises CorpusError (file, line, problem)."""
        path = str(path)
        terms: dict[str, str] = {}
        for lineno, line in enumerate(_read_lines(path), start=1):
            if line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise CorpusError(path, lineno, f"expected 'term<TAB>type', got {line[:60]!r}")
            term, type_ = parts
            if term in terms:
                raise CorpusError(path, lineno, f"duplicate term {term!r}")
            terms[term] = type_
        return cls(terms)


class LexiconBuilder:
    """Collects votes from term lists and training mentions, then resolves one type per term.

    ``type_order`` breaks ties (see :func:`resolve_type`); ``retype`` refines list types.
    """

    def __init__(self, term_filter: TermFilter = TermFilter(), type_order: Sequence[str] = (),
                 retype: Retype | None = None):
        self.term_filter = term_filter
        self.type_order = tuple(type_order)
        self.retype = retype
        self.votes: Votes = {}
        self.reports: list[SourceReport] = []

    def add_source(self, src: LexiconSource, name: str | None = None) -> SourceReport:
        rep = read_source(src, self.term_filter, self.votes, self.retype, name)
        self.reports.append(rep)
        return rep

    def add_terms(self, terms: Mapping[str, str], name: str = "terms") -> SourceReport:
        """One vote per entry of an in-memory ``term -> type`` mapping (filtered like a list)."""
        rep = SourceReport(name=name)
        for raw, type_ in terms.items():
            rep.read += 1
            term, reason = self.term_filter.clean(raw)
            if reason is not None:
                rep.rejected[reason] += 1
                continue
            self.votes.setdefault(term, Counter())[type_] += 1
            rep.kept += 1
            rep.types[type_] += 1
        self.reports.append(rep)
        return rep

    def add_mentions(self, docs: Iterable[Document]) -> SourceReport:
        rep = mention_votes(docs, self.term_filter, lambda doc: self.votes)
        self.reports.append(rep)
        return rep

    def build(self) -> Lexicon:
        report = LexiconReport(sources=list(self.reports))
        terms = resolve(self.votes, self.type_order, report)
        report.terms = len(terms)
        report.type_counts = Counter(terms.values())
        votes = {t: Counter(c) for t, c in self.votes.items()}
        return Lexicon(terms, votes=votes, report=report)


def builder_from_config(cfg: LexiconConfig) -> LexiconBuilder:
    """A builder holding the votes of the configured preset's lists and of ``cfg.sources``
    (preset lists first; stop words: ``cfg.stopwords`` plus the preset's stop-word files)."""
    preset = get_preset(cfg.preset) if cfg.preset else None
    root = lexicons_dir()
    stopwords: set[str] = set()
    if preset is not None:
        for rel in preset.stopword_files:
            stopwords.update(w.strip(_STRIP) for w in _read_lines(os.path.join(root, rel)) if w.strip(_STRIP))
    builder = LexiconBuilder(
        TermFilter.from_config(cfg, stopwords),
        preset.types if preset is not None else (),
        preset.retyper() if preset is not None else None,
    )
    if preset is not None:
        for src in preset.resolved_sources(root):
            builder.add_source(src, name=f"{preset.name}:{os.path.relpath(src.path, root)}")
    for src in cfg.sources:
        builder.add_source(src)
    return builder


def build_lexicon(cfg: LexiconConfig, train_docs: Iterable[Document] = ()) -> Lexicon:
    """The lexicon of a config: the preset's lists, ``cfg.sources`` and, when
    ``cfg.include_train_mentions``, every mention of ``train_docs`` (no folds: use
    :func:`build_folded_lexicon` to match training documents out of fold)."""
    builder = builder_from_config(cfg)
    if cfg.include_train_mentions:
        builder.add_mentions(train_docs)
    return builder.build()


# ----------------------------------------------------------------------------------------------
# Out-of-fold lexicons for training documents
# ----------------------------------------------------------------------------------------------


def doc_fold(doc_id: str, k: int) -> int:
    """The fold ``0..k-1`` of a document id: BLAKE2b of its UTF-8 bytes, mod ``k`` (stable across
    runs and processes, unlike Python's salted ``hash``)."""
    if k < 1:
        raise ValueError(f"doc_fold: k must be >= 1, got {k}")
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % k


class FoldedLexicon:
    """Out-of-fold lexicons: ``for_doc(train_id)`` lacks the mentions of that document's fold.

    ``base`` holds the external terms (its ``votes`` are reused when present, else one vote per
    term); every training mention adds a vote to the fold of its document,
    ``doc_fold(group(doc), k)`` (``group`` defaults to the document id: pass a record id for
    corpora split into sections, so one patient's sections share a fold). The lexicon of fold
    ``f`` resolves ``base votes + mention votes of all other folds``: a term mentioned only in
    fold ``f`` is absent from it, a term of the external lists always stays (its type may differ).
    ``full`` resolves all votes (use it for dev, test and unlabeled text; it equals
    :func:`build_lexicon` on the same inputs). ``k == 0`` turns folds off: every document gets
    ``full`` (the measured pitfall, kept for the ablation). All lexicons share one trie.
    """

    def __init__(self, base: Lexicon, train_docs: Iterable[Document], k: int, *,
                 term_filter: TermFilter = TermFilter(), type_order: Sequence[str] = (),
                 group: Callable[[Document], str] | None = None):
        if k < 0:
            raise ValueError(f"FoldedLexicon: k must be >= 0, got {k}")
        self.k = k
        group = group or (lambda doc: doc.id)
        ext: Votes = base.votes if base.votes is not None else {t: Counter({ty: 1}) for t, ty in base.items()}
        fold_votes: list[Votes] = [{} for _ in range(max(k, 1))]
        self._doc_folds: dict[str, int] = {}

        def table(doc: Document) -> Votes:
            fold = doc_fold(group(doc), k) if k > 0 else 0
            prev = self._doc_folds.setdefault(doc.id, fold)
            if prev != fold:
                raise CorpusError(doc.source or doc.id, None,
                                  f"document id {doc.id!r} appears twice, in folds {prev} and {fold}")
            return fold_votes[fold]

        mention_report = mention_votes(train_docs, term_filter, table)
        total: Votes = {t: Counter(c) for t, c in ext.items()}
        for votes in fold_votes:
            for term, counter in votes.items():
                total.setdefault(term, Counter()).update(counter)
        report = LexiconReport(sources=list(base.report.sources) if base.report else [])
        report.sources.append(mention_report)
        full_terms = resolve(total, type_order, report)
        report.terms = len(full_terms)
        report.type_counts = Counter(full_terms.values())
        self.report = report

        self.full = Lexicon(full_terms, votes=total, report=report)
        self.folds: list[Lexicon] = []
        if k > 0:
            for votes in fold_votes:
                terms = dict(full_terms)
                for term, own in votes.items():
                    rest = total[term] - own  # Counter subtraction keeps positive counts only
                    if rest:
                        terms[term] = resolve_type(rest, type_order)
                    else:
                        del terms[term]
                self.folds.append(Lexicon(terms, report=report))
        self._attach_matchers()

    def _attach_matchers(self) -> None:
        """One trie over the full lexicon's terms; each fold gets a type table over it (a fold's
        terms are a subset of the full lexicon's)."""
        index = TermIndex(sorted(self.full))
        self.index = index
        self.full._matcher = Matcher(index, [self.full[t] for t in index.terms])
        for fold in self.folds:
            fold._matcher = Matcher(index, [fold.get(t) for t in index.terms])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["index"] = None  # Lexicon pickles drop their matchers; rebuilt (shared) on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach_matchers()

    def fold_of(self, doc_id: str) -> int | None:
        """The fold of a training document id, None for a document not seen in training."""
        return self._doc_folds.get(doc_id) if self.k > 0 else None

    def for_doc(self, doc_id: str) -> Lexicon:
        """The lexicon to match document ``doc_id`` with: its fold's for a training document,
        ``full`` for any other id (dev, test, unlabeled) or when folds are off."""
        fold = self.fold_of(doc_id)
        return self.full if fold is None else self.folds[fold]

    def types(self) -> list[str]:
        return self.full.types()


def build_folded_lexicon(cfg: LexiconConfig, train_docs: Iterable[Document],
                         group: Callable[[Document], str] | None = None) -> FoldedLexicon:
    """:class:`FoldedLexicon` of a config: external lists as the base, ``cfg.folds`` folds over
    ``train_docs`` (their mentions are left out when ``cfg.include_train_mentions`` is false)."""
    builder = builder_from_config(cfg)
    base = builder.build()
    docs = train_docs if cfg.include_train_mentions else ()
    return FoldedLexicon(base, docs, cfg.folds, term_filter=builder.term_filter,
                         type_order=builder.type_order, group=group)
