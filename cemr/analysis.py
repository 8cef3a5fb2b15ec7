"""Error analysis of predicted spans against gold, and how much evaluation text resembles training text.

**Error categories** (:func:`categorize`), on document offsets, one document at a time. Gold and
predicted spans are paired one to one, in this order of preference:

1. ``exact``: same start, end and type (a true positive of :func:`cemr.metrics.evaluate`);
2. ``type``: same start and end, another type;
3. ``boundary``: overlapping, same type, other boundaries;
4. ``boundary+type``: overlapping, other boundaries and another type;

then a gold span left unpaired is ``missed`` and a predicted span left unpaired is ``spurious``.
Within levels 3 and 4 the pair with the largest overlap goes first (then the smallest boundary
shift, then document order), so the result does not depend on the input order. A ``missed`` (or
``spurious``) outcome is ``overlapped`` when a span of the other side overlaps it but was paired
with a span it fits better: one long prediction over two gold mentions pairs with one of them,
the other is missed and overlapped.

Every gold span is in exactly one outcome whose ``gold`` it is, every predicted span in exactly
one whose ``pred`` it is; so for any breakdown ``exact + type + boundary + boundary+type +
missed`` is the gold count and ``exact + type + boundary + boundary+type + spurious`` the
prediction count (:class:`Tally`), and ``exact`` equals the true positives of exact-match scoring.

**Breakdowns** (:func:`breakdown`) group outcomes by a key of the outcome's span (its gold span;
a spurious one's predicted span): entity type (:func:`type_key`), length of the sentence it sits
in (:class:`SentenceLocator`, :func:`length_bucket`), CCKS2017 section (:func:`section_of`), whether
its mention string is among the training mentions (:class:`MentionIndex`), or among a lexicon's
terms (:func:`lexicon_key`). Recall of a group is ``exact / gold``; its precision ``exact /
predictions`` counts the predictions keyed into it (pairs by their gold span), so per-type
precision differs from :func:`cemr.metrics.evaluate`'s when a type error crosses types.

**Similarity to training text** (no model): :class:`SentenceIndex` finds, for a sentence, an
exact (normalised, :func:`cemr.corpus.dedup.normalize`) or near duplicate (Jaccard of char
5-grams >= a threshold, MinHash-LSH then verified exactly: :class:`cemr.corpus.dedup.Deduper`)
among reference sentences; :class:`MentionIndex` says whether a mention string was seen in
training and as which type; :func:`dictionary_agreement` measures what the dictionary feature
(bidirectional maximum matching) marks on gold sentences.

Pure functions and small classes: no model, no Ray, no I/O.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cemr.corpus.dedup import Deduper, normalize, text_digest
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence
from cemr.metrics import PRF, SpansByDoc, paired_documents

EXACT = "exact"
TYPE_ERROR = "type"
BOUNDARY = "boundary"
BOUNDARY_TYPE = "boundary+type"
MISSED = "missed"
SPURIOUS = "spurious"
CATEGORIES = (EXACT, TYPE_ERROR, BOUNDARY, BOUNDARY_TYPE, MISSED, SPURIOUS)
PAIRED = (EXACT, TYPE_ERROR, BOUNDARY, BOUNDARY_TYPE)
GOLD_SIDE = (*PAIRED, MISSED)
PRED_SIDE = (*PAIRED, SPURIOUS)


# ----------------------------------------------------------------------------------------------
# Error categories
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One gold span, one predicted span, or a pair of them, with its category.

    ``gold`` is None for ``spurious``, ``pred`` None for ``missed``; ``overlapped``: a missed or
    spurious span that a span of the other side (paired elsewhere) overlaps."""

    doc_id: str
    category: str
    gold: Span | None
    pred: Span | None
    overlapped: bool = False

    @property
    def span(self) -> Span:
        """The span breakdowns key this outcome by: the gold span, or the prediction of a spurious one."""
        return self.gold if self.gold is not None else self.pred  # type: ignore[return-value]


def _overlap(a: Span, b: Span) -> int:
    return min(a.end, b.end) - max(a.start, b.start)


def categorize_document(doc_id: str, gold: Iterable[Span], pred: Iterable[Span]) -> list[Outcome]:
    """The outcomes of one document (see the module docstring): gold order, then spurious ones."""
    g, p = sorted(gold), sorted(pred)
    g_pair: list[int | None] = [None] * len(g)
    p_pair: list[int | None] = [None] * len(p)
    g_cat: list[str | None] = [None] * len(g)

    def pair(i: int, j: int, category: str) -> None:
        g_pair[i], p_pair[j], g_cat[i] = j, i, category

    # 1. exact (multiset: each predicted span pairs at most once)
    free: dict[Span, list[int]] = {}
    for j, s in enumerate(p):
        free.setdefault(s, []).append(j)
    for i, s in enumerate(g):
        if free.get(s):
            pair(i, free[s].pop(0), EXACT)
    # 2. same boundaries, another type
    by_bounds: dict[tuple[int, int], list[int]] = {}
    for j, s in enumerate(p):
        if p_pair[j] is None:
            by_bounds.setdefault((s.start, s.end), []).append(j)
    for i, s in enumerate(g):
        if g_pair[i] is None and by_bounds.get((s.start, s.end)):
            pair(i, by_bounds[(s.start, s.end)].pop(0), TYPE_ERROR)
    # 3-4. overlapping: same type first, then another type; largest overlap first
    starts = [s.start for s in p]
    longest = max((len(s) for s in p), default=0)
    overlapping: list[tuple[int, int]] = []  # (gold index, pred index) of every overlapping pair
    for i, s in enumerate(g):
        for j in range(bisect.bisect_left(starts, s.start - longest), bisect.bisect_left(starts, s.end)):
            if p[j].overlaps(s):
                overlapping.append((i, j))
    for category, same_type in ((BOUNDARY, True), (BOUNDARY_TYPE, False)):
        candidates = [(i, j) for i, j in overlapping
                      if g_pair[i] is None and p_pair[j] is None and (g[i].type == p[j].type) == same_type]
        candidates.sort(key=lambda ij: (-_overlap(g[ij[0]], p[ij[1]]),
                                        abs(g[ij[0]].start - p[ij[1]].start) + abs(g[ij[0]].end - p[ij[1]].end),
                                        ij))
        for i, j in candidates:
            if g_pair[i] is None and p_pair[j] is None:
                pair(i, j, category)
    touched_g = {i for i, _ in overlapping}
    touched_p = {j for _, j in overlapping}
    out = []
    for i, s in enumerate(g):
        j = g_pair[i]
        if j is None:
            out.append(Outcome(doc_id, MISSED, s, None, overlapped=i in touched_g))
        else:
            out.append(Outcome(doc_id, g_cat[i], s, p[j]))  # type: ignore[arg-type]
    for j, s in enumerate(p):
        if p_pair[j] is None:
            out.append(Outcome(doc_id, SPURIOUS, None, s, overlapped=j in touched_p))
    return out


def categorize(gold: SpansByDoc, pred: SpansByDoc) -> list[Outcome]:
    """The outcomes of every gold document (``{doc_id: spans}`` or Documents), in gold order.

    As :func:`cemr.metrics.evaluate`: a gold document absent from ``pred`` has no predictions; a
    ``pred`` document unknown to gold raises :class:`cemr.metrics.EvalError` naming its id."""
    gold_map, pred_map = paired_documents(gold, pred)
    out: list[Outcome] = []
    for doc_id, spans in gold_map.items():
        out.extend(categorize_document(doc_id, spans, pred_map.get(doc_id, ())))
    return out


# ----------------------------------------------------------------------------------------------
# Tallies and breakdowns
# ----------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcome counts of one group: ``counts[category]``, ``overlapped`` missed/spurious ones."""

    counts: Counter = field(default_factory=Counter)
    overlapped: Counter = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        if outcome.category not in CATEGORIES:
            raise ValueError(f"unknown outcome category {outcome.category!r}")
        self.counts[outcome.category] += 1
        if outcome.overlapped:
            self.overlapped[outcome.category] += 1

    @property
    def gold(self) -> int:
        return sum(self.counts[c] for c in GOLD_SIDE)

    @property
    def pred(self) -> int:
        return sum(self.counts[c] for c in PRED_SIDE)

    @property
    def prf(self) -> PRF:
        tp = self.counts[EXACT]
        return PRF.from_counts(tp, self.pred - tp, self.gold - tp)

    def to_dict(self) -> dict[str, Any]:
        prf = self.prf
        return {
            **{c: self.counts[c] for c in CATEGORIES},
            "missed_overlapped": self.overlapped[MISSED],
            "spurious_overlapped": self.overlapped[SPURIOUS],
            "gold": self.gold,
            "pred": self.pred,
            "precision": prf.precision,
            "recall": prf.recall,
            "f1": prf.f1,
        }


def tally(outcomes: Iterable[Outcome]) -> Tally:
    t = Tally()
    for o in outcomes:
        t.add(o)
    return t


def breakdown(outcomes: Iterable[Outcome], key: Callable[[Outcome], Hashable]) -> dict[Hashable, Tally]:
    """``{key(outcome): Tally}``, groups in order of first appearance (sort them for display)."""
    groups: dict[Hashable, Tally] = {}
    for o in outcomes:
        groups.setdefault(key(o), Tally()).add(o)
    return groups


def type_key(o: Outcome) -> str:
    """The gold type (the predicted type of a spurious span)."""
    return o.span.type


LENGTH_EDGES = (20, 50, 100, 200)


def length_bucket(n: int, edges: Sequence[int] = LENGTH_EDGES) -> str:
    """``"1-20"``, ``"21-50"``, ..., ``">200"`` for ``edges=(20, 50, 100, 200)``: the bucket of length ``n``."""
    lo = 1
    for e in edges:
        if n <= e:
            return f"{lo}-{e}"
        lo = e + 1
    return f">{edges[-1]}" if edges else "all"


def bucket_order(label: str) -> tuple[int, str]:
    """Sort key of :func:`length_bucket` labels (numeric, ``>N`` last)."""
    m = re.match(r">?(\d+)", label)
    return (int(m.group(1)) + (1 if label.startswith(">") else 0), label) if m else (1 << 62, label)


class SentenceLocator:
    """The sentence (as tagged: :meth:`cemr.predictor.Predictor.split`) a document offset falls in.

    ``length(doc_id, offset)`` is the length of the sentence holding ``offset``; an offset in the
    whitespace between two sentences belongs to the next one (the last one past the end).
    """

    def __init__(self, sentences: Iterable[Sentence]):
        by_doc: dict[str, list[Sentence]] = {}
        for s in sentences:
            by_doc.setdefault(s.doc_id, []).append(s)
        self._starts: dict[str, list[int]] = {}
        self._lengths: dict[str, list[int]] = {}
        for doc_id, sents in by_doc.items():
            sents.sort(key=lambda s: s.offset)
            self._starts[doc_id] = [s.offset for s in sents]
            self._lengths[doc_id] = [len(s.text) for s in sents]

    def length(self, doc_id: str, offset: int) -> int:
        starts = self._starts.get(doc_id)
        if not starts:
            raise KeyError(f"no sentence of document {doc_id!r}")
        k = bisect.bisect_right(starts, offset) - 1
        lengths = self._lengths[doc_id]
        if k >= 0 and offset < starts[k] + lengths[k]:
            return lengths[k]
        return lengths[min(k + 1, len(lengths) - 1)]

    def key(self, edges: Sequence[int] = LENGTH_EDGES) -> Callable[[Outcome], str]:
        """A breakdown key: the length bucket of the sentence the outcome's span starts in."""
        return lambda o: length_bucket(self.length(o.doc_id, o.span.start), edges)


_SECTION = re.compile(r"^(?P<section>.+)-(?P<record>\d+)$")


def section_of(doc_id: str) -> str:
    """The CCKS2017 section of a document id ``<section>-<record>`` (``病史特点-12`` -> ``病史特点``);
    ``"-"`` for an id of another form."""
    m = _SECTION.match(doc_id)
    return m.group("section") if m else "-"


def section_key(o: Outcome) -> str:
    return section_of(o.doc_id)


SEEN_TYPE = "seen, same type"
SEEN_OTHER = "seen, other type only"
UNSEEN = "unseen"
SEEN_LABELS = (SEEN_TYPE, SEEN_OTHER, UNSEEN)


class MentionIndex:
    """Mention strings of (training) documents and the types each was annotated with."""

    def __init__(self, docs: Iterable[Document] = ()):
        self.types: dict[str, set[str]] = {}
        for d in docs:
            for s in d.spans:
                self.add(d.mention(s), s.type)

    def add(self, text: str, type_: str) -> None:
        self.types.setdefault(text, set()).add(type_)

    def __len__(self) -> int:
        return len(self.types)

    def __contains__(self, text: object) -> bool:
        return text in self.types

    def label(self, text: str, type_: str) -> str:
        """:data:`SEEN_TYPE`, :data:`SEEN_OTHER` or :data:`UNSEEN` for a mention string of a type."""
        seen = self.types.get(text)
        if not seen:
            return UNSEEN
        return SEEN_TYPE if type_ in seen else SEEN_OTHER

    def key(self, texts: Mapping[str, str]) -> Callable[[Outcome], str]:
        """A breakdown key: whether the outcome's mention (``texts[doc_id]`` sliced by its span) was
        seen, as its type or another one."""
        def key(o: Outcome) -> str:
            s = o.span
            return self.label(_text_of(texts, o.doc_id)[s.start:s.end], s.type)
        return key


def _text_of(texts: Mapping[str, str], doc_id: str) -> str:
    try:
        return texts[doc_id]
    except KeyError:
        raise KeyError(f"no text for document {doc_id!r}") from None


IN_LEXICON = "in lexicon"
OUT_OF_LEXICON = "not in lexicon"


def lexicon_key(terms: Any, texts: Mapping[str, str]) -> Callable[[Outcome], str]:
    """A breakdown key: whether the outcome's mention string is one of ``terms`` (anything with
    ``in``: a set, a :class:`cemr.lexicon.Lexicon`), whatever type the lexicon gives it."""
    def key(o: Outcome) -> str:
        s = o.span
        return IN_LEXICON if _text_of(texts, o.doc_id)[s.start:s.end] in terms else OUT_OF_LEXICON
    return key


# ----------------------------------------------------------------------------------------------
# Similarity of evaluation text to training text
# ----------------------------------------------------------------------------------------------

EXACT_DUP = "exact"
NEAR_DUP = "near"
NO_DUP = "none"


class SentenceIndex:
    """Reference sentences for duplicate look-ups: :meth:`match` says whether a text equals one
    after :func:`~cemr.corpus.dedup.normalize` (``"exact"``), is a near duplicate of one (Jaccard
    of char ``ngram``-grams >= ``threshold``, ``"near"``) or neither (``"none"``), and which."""

    def __init__(self, threshold: float = 0.8, ngram: int = 5, num_perm: int = 64):
        self.threshold = threshold
        self._dedup = Deduper(threshold=threshold, ngram=ngram, num_perm=num_perm)
        self._exact: dict[bytes, Hashable] = {}

    def __len__(self) -> int:
        return len(self._dedup)

    def add(self, key: Hashable, text: str) -> None:
        """Index one reference text (an empty one after normalisation is skipped)."""
        norm = normalize(text)
        if not norm:
            return
        self._exact.setdefault(text_digest(norm), key)
        self._dedup.seed([(key, text)], reason="reference")

    def match(self, text: str) -> tuple[str, Hashable | None]:
        """``(kind, key of the reference)``: kind ``"exact"``, ``"near"`` or ``"none"`` (key None)."""
        norm = normalize(text)
        if not norm:
            return NO_DUP, None
        key = self._exact.get(text_digest(norm))
        if key is not None:
            return EXACT_DUP, key
        result = self._dedup.check(text)
        return (NO_DUP, None) if result.kept else (NEAR_DUP, result.duplicate_of)


@dataclass
class Overlap:
    """Sentences (and their characters) of one group with an exact / near duplicate among the references."""

    sentences: Counter = field(default_factory=Counter)
    chars: Counter = field(default_factory=Counter)
    mentions: Counter = field(default_factory=Counter)  # gold spans inside those sentences

    def add(self, kind: str, n_chars: int, n_mentions: int = 0) -> None:
        self.sentences[kind] += 1
        self.chars[kind] += n_chars
        self.mentions[kind] += n_mentions

    @property
    def total(self) -> int:
        return sum(self.sentences.values())

    def share(self, *kinds: str, chars: bool = False, mentions: bool = False) -> float:
        c = self.chars if chars else self.mentions if mentions else self.sentences
        total = sum(c.values())
        return sum(c[k] for k in kinds) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentences": self.total,
            "exact": self.sentences[EXACT_DUP],
            "near": self.sentences[NEAR_DUP],
            "exact_share": self.share(EXACT_DUP),
            "exact_or_near_share": self.share(EXACT_DUP, NEAR_DUP),
            "exact_or_near_char_share": self.share(EXACT_DUP, NEAR_DUP, chars=True),
            "mentions": sum(self.mentions.values()),
            "exact_or_near_mention_share": self.share(EXACT_DUP, NEAR_DUP, mentions=True),
        }


def sentence_overlap(sentences: Iterable[Sentence], index: SentenceIndex,
                     group: Callable[[Sentence], Hashable] = lambda s: "all") -> dict[Hashable, Overlap]:
    """``{group: Overlap}`` of ``sentences`` against ``index``: sentences, their characters and their
    gold spans by the kind of duplicate the sentence has (whitespace-only sentences skipped)."""
    out: dict[Hashable, Overlap] = {}
    for s in sentences:
        if not normalize(s.text):
            continue
        kind, _ = index.match(s.text)
        out.setdefault(group(s), Overlap()).add(kind, len(s.text), len(s.spans))
    return out


@dataclass
class Seen:
    """Gold mentions of one group by :class:`MentionIndex` label: occurrences and distinct strings."""

    mentions: Counter = field(default_factory=Counter)
    strings: dict[str, set[str]] = field(default_factory=dict)  # label -> distinct "type\tstring"

    def add(self, label: str, text: str, type_: str) -> None:
        self.mentions[label] += 1
        self.strings.setdefault(label, set()).add(f"{type_}\t{text}")

    @property
    def total(self) -> int:
        return sum(self.mentions.values())

    def share(self, *labels: str) -> float:
        return sum(self.mentions[k] for k in labels) / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        distinct = sum(len(v) for v in self.strings.values())
        return {
            "mentions": self.total,
            **{k: self.mentions[k] for k in SEEN_LABELS},
            "seen_share": self.share(SEEN_TYPE, SEEN_OTHER),
            "seen_same_type_share": self.share(SEEN_TYPE),
            "distinct": distinct,
            "distinct_unseen_share": len(self.strings.get(UNSEEN, ())) / distinct if distinct else 0.0,
        }


def mention_seen(docs: Iterable[Document], index: MentionIndex,
                 group: Callable[[Document], Hashable] = lambda d: "all") -> dict[Hashable, Seen]:
    """``{group: Seen}``: every gold mention of ``docs`` labelled by ``index``."""
    out: dict[Hashable, Seen] = {}
    for d in docs:
        acc = out.setdefault(group(d), Seen())
        for s in d.spans:
            text = d.mention(s)
            acc.add(index.label(text, s.type), text, s.type)
    return out


@dataclass
class DictionaryAgreement:
    """What the dictionary feature marks on gold sentences: ``gold`` mentions, those whose string is
    a term (``gold_term``: any type; ``gold_term_type``: as its gold type), matched words
    (``words``: BMM segments), words equal to a gold span (``exact``: start, end and type;
    ``bounds``: start and end, any type)."""

    gold: int = 0
    gold_term: int = 0
    gold_term_type: int = 0
    words: int = 0
    exact: int = 0
    bounds: int = 0

    def to_dict(self) -> dict[str, Any]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else 0.0
        return {
            "gold": self.gold, "words": self.words,
            "gold_term_share": ratio(self.gold_term, self.gold),
            "gold_term_type_share": ratio(self.gold_term_type, self.gold),
            "word_recall": ratio(self.exact, self.gold),  # gold spans the feature marks exactly, typed
            "word_precision": ratio(self.exact, self.words),
            "bounds_recall": ratio(self.bounds, self.gold),
        }


def dictionary_agreement(sentences: Iterable[Sentence], lexicon_for: Callable[[Sentence], Any],
                         group: Callable[[Sentence], Hashable] = lambda s: "all"
                         ) -> dict[Hashable, DictionaryAgreement]:
    """``{group: DictionaryAgreement}``: each sentence matched (:func:`cemr.lexicon.matching.bmm`)
    against ``lexicon_for(sentence)`` (a :class:`cemr.lexicon.Lexicon`: the out-of-fold one of a
    training sentence, the full one of a dev/test sentence, as the tagger's collator does)."""
    from cemr.lexicon.matching import bmm

    out: dict[Hashable, DictionaryAgreement] = {}
    for s in sentences:
        lex = lexicon_for(s)
        acc = out.setdefault(group(s), DictionaryAgreement())
        words = bmm(s.text, lex)
        gold = Counter(s.spans)
        bounds = Counter((g.start, g.end) for g in s.spans)
        acc.gold += len(s.spans)
        acc.words += len(words)
        for g in s.spans:
            typ = lex.get(s.text[g.start:g.end])
            acc.gold_term += typ is not None
            acc.gold_term_type += typ == g.type
        for w in words:
            if gold[w] > 0:
                gold[w] -= 1
                acc.exact += 1
            if bounds[(w.start, w.end)] > 0:
                bounds[(w.start, w.end)] -= 1
                acc.bounds += 1
    return out


def natural_key(text: str) -> tuple:
    """Sort key that orders the digit runs of ``text`` by value (``rec-9`` before ``rec-10``)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))
