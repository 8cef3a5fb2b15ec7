"""The self-training selection policy: what of a predicted sentence becomes a pseudo-label.

One :class:`SelectionPolicy`, built from the ``selftrain`` config section by
:func:`policy_from_config`, owns the whole rule:

- the confidence method the predictor measures with (``confidence_method``, one of
  :data:`METHODS`; the maths is :mod:`cemr.confidence`), passed to it by
  :meth:`SelectionPolicy.predictor_kwargs`;
- the score a sentence is compared with the threshold (:meth:`SelectionPolicy.score`): in
  ``sentence`` mode the minimum of the sentence confidence (when given) and of every entity
  confidence, otherwise the best entity; None when there is nothing to score;
- the keep decision, the kept spans and the reason (:meth:`SelectionPolicy.select`);
- the characters a ``partial`` pseudo-label leaves untagged (:meth:`SelectionPolicy.unsure`);
- the cap (``max_pseudo_per_round``, ``cap_keeps_empty_share``, ``class_balance``): the kept
  sentences ranked by the same score (:meth:`SelectionPolicy.candidate`, :func:`cap_rank`), then
  :meth:`SelectionPolicy.cap`.

:meth:`SelectionPolicy.decide` applies the score, the keep rule and the unsure ranges to one
sentence (what ``cluster.pseudolabel`` writes per row). The policy is a frozen dataclass: pure
(no torch, no Ray), hashable and picklable. :func:`select_sentence` and :func:`unsure_ranges`
are the same rule as plain functions.

Selection modes (``selftrain.selection``, :data:`SELECTION_MODES`):

- ``sentence``: a sentence is kept whole (all its predicted entities, and its ``O`` characters as
  negatives) when its score reaches the threshold, so one unsure mention sinks the sentence. A
  sentence with no predicted entity is kept only when a sentence confidence says the model is
  sure of its ``O`` tags.
- ``entity``: every entity at or above the threshold is kept, the others are dropped; the sentence
  is kept when at least one entity survives. Dropped mentions become ``O`` in training (possible
  false negatives): cheaper in recall, richer in entities.
- ``partial``: entity selection, but nothing the model is unsure of is trained as ``O``: the
  characters of dropped mentions, and every other character whose decoded tag's marginal
  (``token_confidence``) is below the threshold, are written as ``unsure`` ranges and the CRF
  loss sums over all tags there (partial-label training,
  :func:`cemr.confidence.crf_partial_nll`). Confident ``O`` characters stay negatives. Measured in
  ``benchmarks/bench_lowres.py``: the ``O`` given to missed and unsure mentions is what cost the
  other two modes their recall.

Statuses of a pseudo-labeled sentence (:data:`STATUSES`): ``kept`` and ``below_threshold`` (the
policy's decision) and ``failed`` (the predictor raised or returned something invalid; recorded
by the caller).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cemr.corpus.document import Span

KEPT = "kept"
BELOW_THRESHOLD = "below_threshold"
FAILED = "failed"
STATUSES = (KEPT, BELOW_THRESHOLD, FAILED)
SELECTION_MODES = ("sentence", "entity", "partial")

# confidence methods: what each computes is cemr.confidence (batch_confidences)
DEFAULT_METHOD = "entity_min_marginal"
METHODS = ("entity_min_marginal", "entity_mean_marginal", "sequence_prob")
ALIASES = {"min_marginal": "entity_min_marginal", "mean_marginal": "entity_mean_marginal"}


def normalize_method(method: str) -> str:
    """Canonical method name (``min_marginal`` -> ``entity_min_marginal`` ...); ValueError if unknown."""
    name = ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"unknown confidence method {method!r}; choose one of {', '.join(METHODS)}")
    return name


class ScoredSpan(Protocol):
    """What a predictor returns per entity (``cemr.predictor.Prediction`` satisfies it)."""

    span: Span
    confidence: float


def _check_confidence(value: float, what: str) -> float:
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0 + 1e-6:
        raise ValueError(f"{what} must be a probability in [0, 1], got {value!r}")
    return min(value, 1.0)


# ----------------------------------------------------------------------------------------------
# Capping and class balance
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A sentence that passed the threshold: its key, confidence (its score) and entity count per type."""

    key: Hashable
    confidence: float
    type_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass
class CapResult:
    """What :func:`cap_pseudo_labels` selected (in confidence order) and why the rest was dropped."""

    selected: list[Hashable]
    dropped: dict[Hashable, str]
    type_caps: dict[str, int] = field(default_factory=dict)


def cap_rank(candidate: Candidate) -> tuple[float, str]:
    """The order the cap visits candidates in: highest confidence first, then by key (so the
    result is deterministic)."""
    return (-float(candidate.confidence), str(candidate.key))


def _is_empty(candidate: Candidate) -> bool:
    return not any(n > 0 for n in candidate.type_counts.values())


def empty_cap(max_sentences: int, n_empty: int, n_candidates: int) -> int:
    """How many entity-free sentences a cap of ``max_sentences`` keeps when ``n_empty`` of the
    ``n_candidates`` have no kept entity: all of them when the cap does not bind, else their share
    of the cap, rounded (never above ``n_empty``, and never fewer than the places the sentences
    with entities leave free, since ``max_sentences < n_candidates``)."""
    if n_candidates <= max_sentences:
        return n_empty
    return round(max_sentences * n_empty / n_candidates)


def type_caps(candidate_counts: Mapping[str, int], type_share: Mapping[str, float]) -> dict[str, int]:
    """Entity budget per type so the pseudo-labels follow the gold type distribution.

    ``candidate_counts``: entities per type among the candidates; ``type_share``: the gold share
    of each type (any positive weights; normalised here). The scale ``N`` is the largest total
    such that every type present among the candidates can supply ``N * share``; a type's cap is
    ``ceil(N * share)``. A predicted type with no gold share gets cap 0.
    """
    total = sum(w for w in type_share.values() if w > 0)
    if total <= 0:
        raise ValueError("type_share must have at least one positive weight")
    share = {t: w / total for t, w in type_share.items() if w > 0}
    present = [t for t in share if candidate_counts.get(t, 0) > 0]
    if not present:
        return {t: 0 for t in set(share) | set(candidate_counts)}
    scale = min(candidate_counts[t] / share[t] for t in present)
    caps = {t: int(math.ceil(scale * share[t] - 1e-9)) for t in share}
    for t in candidate_counts:
        caps.setdefault(t, 0)
    return caps


def cap_pseudo_labels(
    candidates: Iterable[Candidate],
    max_sentences: int | None = None,
    type_share: Mapping[str, float] | None = None,
    keep_empty_share: bool = False,
) -> CapResult:
    """Keep the most confident candidates within a sentence cap and, optionally, type caps.

    Candidates are visited in :func:`cap_rank` order. ``max_sentences`` (None = no cap) limits the
    kept sentences; ``type_share`` (None = no class balance) limits entities per type to
    :func:`type_caps`: a sentence whose entities would exceed a type's remaining budget is
    skipped. ``keep_empty_share`` (with ``max_sentences``): sentences without a kept entity take at
    most their share among the candidates of the cap (:func:`empty_cap`), so a confidence ranking,
    which puts short entity-free sentences first, does not fill the cap with them. Every candidate
    ends up either in ``selected`` or in ``dropped`` with its reason.
    """
    if max_sentences is not None and max_sentences < 0:
        raise ValueError(f"max_sentences must be >= 0, got {max_sentences}")
    ordered = sorted(candidates, key=cap_rank)
    empty_limit = None
    if keep_empty_share and max_sentences is not None:
        n_empty = sum(1 for c in ordered if _is_empty(c))
        empty_limit = empty_cap(max_sentences, n_empty, len(ordered))
    n_empty_kept = 0
    caps: dict[str, int] = {}
    if type_share is not None:
        counts: Counter = Counter()
        for c in ordered:
            counts.update({t: n for t, n in c.type_counts.items() if n > 0})
        caps = type_caps(counts, type_share)
    used: Counter = Counter()
    selected: list[Hashable] = []
    dropped: dict[Hashable, str] = {}
    for c in ordered:
        if max_sentences is not None and len(selected) >= max_sentences:
            dropped[c.key] = f"over max_pseudo_per_round={max_sentences}"
            continue
        if empty_limit is not None and _is_empty(c):
            if n_empty_kept >= empty_limit:
                dropped[c.key] = (f"over the entity-free share of max_pseudo_per_round={max_sentences} "
                                  f"({empty_limit} sentences)")
                continue
            n_empty_kept += 1
        if type_share is not None:
            over = sorted(t for t, n in c.type_counts.items() if n > 0 and used[t] + n > caps.get(t, 0))
            if over:
                dropped[c.key] = "class balance cap reached for " + ", ".join(over)
                continue
            used.update({t: n for t, n in c.type_counts.items() if n > 0})
        selected.append(c.key)
    return CapResult(selected=selected, dropped=dropped, type_caps=caps)


# ----------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the policy made of one predicted sentence.

    ``spans``: the pseudo-labels, sorted (empty unless ``status`` is ``kept``); ``status``:
    ``kept`` or ``below_threshold``; ``reason``: short and human-readable; ``score``: the number
    compared with the threshold (None: nothing to score); ``unsure``: sorted, merged
    ``(start, end)`` character ranges left untagged (kept sentences in ``partial`` mode only).
    """

    spans: list[Span]
    status: str
    reason: str
    score: float | None
    unsure: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SelectionPolicy:
    """The selection rule of one self-training round (see the module docstring).

    ``threshold`` in [0, 1] (kept when the confidence is >= it); ``mode``: one of
    :data:`SELECTION_MODES`; ``confidence_method``: one of :data:`METHODS` or :data:`ALIASES`
    (stored canonical); ``max_sentences``: the cap on kept sentences (None: none);
    ``class_balance``: cap entities per type to the gold type shares; ``cap_keeps_empty_share``:
    the cap keeps entity-free sentences at their share among the candidates; ``type_thresholds``:
    ``{type: threshold}`` for the entities of those types (``entity`` / ``partial`` modes; the others
    and the ``O`` characters of a partial label keep ``threshold``; stored as sorted pairs, see
    :func:`fit_type_thresholds`). Bad values raise ``ValueError`` naming the ``selftrain`` key.
    """

    threshold: float
    mode: str = "sentence"
    confidence_method: str = DEFAULT_METHOD
    max_sentences: int | None = None
    class_balance: bool = False
    type_thresholds: Any = ()
    cap_keeps_empty_share: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"unknown selection mode {self.mode!r} (selftrain.selection); "
                             f"choose one of {', '.join(SELECTION_MODES)}")
        object.__setattr__(self, "threshold", _check_confidence(self.threshold, "threshold (selftrain.threshold)"))
        object.__setattr__(self, "confidence_method", normalize_method(self.confidence_method))
        if self.max_sentences is not None:
            if int(self.max_sentences) < 0:
                raise ValueError(f"selftrain.max_pseudo_per_round must be >= 0 (or null), got {self.max_sentences}")
            object.__setattr__(self, "max_sentences", int(self.max_sentences))
        object.__setattr__(self, "class_balance", bool(self.class_balance))
        object.__setattr__(self, "cap_keeps_empty_share", bool(self.cap_keeps_empty_share))
        pairs = self.type_thresholds.items() if isinstance(self.type_thresholds, Mapping) else self.type_thresholds
        pairs = tuple(sorted((str(t), _check_confidence(v, f"threshold of type {t}")) for t, v in pairs))
        if pairs and self.mode == "sentence":
            raise ValueError("per-type thresholds (selftrain.target_precision) need selftrain.selection entity or "
                             "partial: sentence selection keeps whole sentences by one score")
        object.__setattr__(self, "type_thresholds", pairs)

    def threshold_for(self, entity_type: str) -> float:
        """The threshold an entity of ``entity_type`` must reach (its type's, else ``threshold``)."""
        for t, v in self.type_thresholds:
            if t == entity_type:
                return v
        return self.threshold

    # -- one sentence --------------------------------------------------------------------------

    def _score(self, confidences: list[float], sentence_confidence: float | None) -> float | None:
        if self.mode == "sentence":
            values = confidences + ([sentence_confidence] if sentence_confidence is not None else [])
            return min(values, default=None)
        return max(confidences, default=None)

    def score(self, preds: Sequence[ScoredSpan], sentence_confidence: float | None = None) -> float | None:
        """The number compared with the threshold: in ``sentence`` mode the minimum of every
        entity confidence and of ``sentence_confidence`` (when given), otherwise the best entity
        confidence; None when there is none. Also what the cap ranks kept sentences by."""
        sent = None if sentence_confidence is None else float(sentence_confidence)
        return self._score([float(p.confidence) for p in preds], sent)

    def select(
        self, preds: Sequence[ScoredSpan], sentence_confidence: float | None = None
    ) -> tuple[list[Span], str, str]:
        """Decide what of one predicted sentence becomes a pseudo-label.

        ``preds``: the sentence's predicted entities (``.span``, ``.confidence``);
        ``sentence_confidence``: the predictor's confidence in the whole decoded sentence, ``O``
        tags included, or None (used by ``sentence`` mode only).

        Returns ``(kept_spans, status, reason)``: ``kept_spans`` sorted (empty unless ``status``
        is ``kept``), ``status`` one of ``kept`` / ``below_threshold``, and a short reason.
        Raises ``ValueError`` for a confidence that is not a probability (the caller records
        those as ``failed``).
        """
        t = self.threshold
        confs = [_check_confidence(p.confidence, f"confidence of {p.span}") for p in preds]
        if sentence_confidence is not None:
            sentence_confidence = _check_confidence(sentence_confidence, "sentence confidence")
        spans = [p.span for p in preds]
        score = self._score(confs, sentence_confidence)

        if self.mode == "sentence":
            if score is None:
                return [], BELOW_THRESHOLD, "no entity predicted and no sentence confidence"
            if score >= t:
                return sorted(spans), KEPT, f"sentence confidence {score:.3f} >= {t:.2f}"
            return [], BELOW_THRESHOLD, f"sentence confidence {score:.3f} < {t:.2f}"
        kept = sorted(s for s, c in zip(spans, confs) if c >= self.threshold_for(s.type))
        bar = "their type thresholds" if self.type_thresholds else f"{t:.2f}"
        if kept:
            return kept, KEPT, f"{len(kept)}/{len(spans)} entities >= {bar}"
        if not spans:
            return [], BELOW_THRESHOLD, "no entity predicted"
        return [], BELOW_THRESHOLD, f"0/{len(spans)} entities >= {bar} (max {score:.3f})"

    def unsure(
        self,
        length: int,
        preds: Sequence[ScoredSpan],
        kept: Sequence[Span],
        token_confidence: Sequence[float] | None = None,
    ) -> list[tuple[int, int]]:
        """The characters a partial pseudo-label leaves untagged, as sorted, merged
        ``(start, end)`` ranges of a sentence of ``length`` characters.

        Unsure: every character of a predicted entity that was not ``kept``, and every character
        outside the kept entities whose ``token_confidence`` (marginal of its decoded tag; None:
        not used) is below the threshold. Characters of kept entities are never unsure.
        """
        if token_confidence is not None and len(token_confidence) != length:
            raise ValueError(f"{len(token_confidence)} token confidences for a sentence of {length} chars")
        unsure = [False] * length
        kept_set = set(kept)
        for p in preds:
            if p.span not in kept_set:
                for i in range(p.span.start, min(p.span.end, length)):
                    unsure[i] = True
        if token_confidence is not None:
            for i, c in enumerate(token_confidence):
                if float(c) < self.threshold:
                    unsure[i] = True
        for span in kept:
            for i in range(span.start, min(span.end, length)):
                unsure[i] = False
        out: list[tuple[int, int]] = []
        i = 0
        while i < length:
            if unsure[i]:
                j = i
                while j < length and unsure[j]:
                    j += 1
                out.append((i, j))
                i = j
            else:
                i += 1
        return out

    def decide(
        self,
        length: int,
        preds: Sequence[ScoredSpan],
        sentence_confidence: float | None = None,
        token_confidence: Sequence[float] | None = None,
    ) -> Decision:
        """:meth:`select`, :meth:`score` and, for a kept sentence in ``partial`` mode,
        :meth:`unsure` (whose character count is added to the reason) of one sentence of
        ``length`` characters."""
        kept, status, reason = self.select(preds, sentence_confidence)
        unsure: list[tuple[int, int]] = []
        if self.mode == "partial" and status == KEPT:
            unsure = self.unsure(length, preds, kept, token_confidence)
            reason += f"; {sum(b - a for a, b in unsure)}/{length} chars unsure"
        return Decision(kept, status, reason, self.score(preds, sentence_confidence), unsure)

    def predictor_kwargs(self) -> dict[str, Any]:
        """What a predictor's ``load`` is given so its confidences are the ones this policy
        thresholds: ``{"confidence": confidence_method}``."""
        return {"confidence": self.confidence_method}

    # -- the cap -------------------------------------------------------------------------------

    @property
    def capped(self) -> bool:
        """Whether a cap applies (``max_pseudo_per_round`` or ``class_balance``)."""
        return self.max_sentences is not None or self.class_balance

    def candidate(self, key: Hashable, score: float | None, types: Iterable[str]) -> Candidate:
        """A kept sentence as a cap candidate: ``key``, its :meth:`score` (None ranks as 0.0,
        last) and the types of its kept entities (one item per entity)."""
        return Candidate(key, 0.0 if score is None else float(score), Counter(types))

    def cap(self, candidates: Iterable[Candidate], type_share: Mapping[str, float] | None = None) -> CapResult:
        """:func:`cap_pseudo_labels` with this policy's ``max_sentences`` and, with
        ``class_balance``, the gold ``type_share`` (required then)."""
        if self.class_balance and not type_share:
            raise ValueError("selftrain.class_balance needs the gold type distribution (type_share)")
        return cap_pseudo_labels(candidates, self.max_sentences, type_share if self.class_balance else None,
                                 keep_empty_share=self.cap_keeps_empty_share)


def policy_from_config(selftrain: Any, threshold: float | None = None,
                       type_thresholds: Mapping[str, float] | None = None) -> SelectionPolicy:
    """The policy of a ``selftrain`` config section (:class:`cemr.config.SelfTrainConfig`):
    ``threshold`` (or the ``threshold`` given, e.g. a sweep's), ``selection``, ``confidence``,
    ``max_pseudo_per_round`` and ``class_balance``; ``type_thresholds``: fitted on dev
    (:func:`fit_type_thresholds`, with ``selftrain.target_precision``)."""
    return SelectionPolicy(
        threshold=selftrain.threshold if threshold is None else threshold,
        mode=selftrain.selection,
        confidence_method=selftrain.confidence,
        max_sentences=selftrain.max_pseudo_per_round,
        class_balance=selftrain.class_balance,
        type_thresholds=type_thresholds or (),
        cap_keeps_empty_share=selftrain.cap_keeps_empty_share,
    )


MIN_TYPE_SUPPORT = 20  # dev predictions of a type below which its threshold is not fitted


@dataclass(frozen=True)
class TypeThreshold:
    """One type's fitted threshold: ``threshold`` (None: not fitted, ``fallback`` applies),
    ``precision`` and ``kept`` (dev predictions at or above it, of ``predicted``), ``why``."""

    type: str
    threshold: float | None
    precision: float | None
    kept: int
    predicted: int
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "threshold": self.threshold, "precision": self.precision, "kept": self.kept,
                "predicted": self.predicted, "why": self.why}


def fit_type_thresholds(types: Sequence[str], confidences: Sequence[float], correct: Sequence[bool],
                        target_precision: float, min_support: int = MIN_TYPE_SUPPORT) -> list[TypeThreshold]:
    """Per entity type, the lowest confidence at which its predictions reach ``target_precision``
    (pure). ``types``, ``confidences``, ``correct``: one item per predicted dev entity (its type, the
    confidence the policy thresholds, whether span and type are gold). The predictions of a type
    are ranked by confidence; the threshold is the confidence of the longest top run whose
    precision is ``>= target_precision`` (ties at that confidence all count), so the kept share
    is the largest with that precision on dev. Not fitted (``threshold`` None): fewer than
    ``min_support`` predictions, or no run reaching the target."""
    if not 0.0 < float(target_precision) <= 1.0:
        raise ValueError(f"selftrain.target_precision must be in (0, 1], got {target_precision}")
    if not len(types) == len(confidences) == len(correct):
        raise ValueError(f"{len(types)} types, {len(confidences)} confidences, {len(correct)} correct flags")
    by_type: dict[str, list[tuple[float, bool]]] = {}
    for t, c, ok in zip(types, confidences, correct):
        by_type.setdefault(str(t), []).append((_check_confidence(c, f"confidence of a {t} prediction"), bool(ok)))
    out = []
    for t, items in sorted(by_type.items()):
        n = len(items)
        if n < min_support:
            out.append(TypeThreshold(t, None, None, 0, n, f"{n} dev predictions < {min_support}"))
            continue
        items.sort(key=lambda x: -x[0])
        best = None
        tp = 0
        for i, (c, ok) in enumerate(items):
            tp += ok
            last_of_tie = i + 1 == n or items[i + 1][0] < c
            if last_of_tie and tp / (i + 1) >= target_precision:
                best = (c, tp / (i + 1), i + 1)
        if best is None:
            out.append(TypeThreshold(t, None, None, 0, n, f"no confidence reaches precision {target_precision:g}"))
        else:
            out.append(TypeThreshold(t, best[0], best[1], best[2], n, f"precision {best[1]:.3f} on dev"))
    return out


def select_sentence(
    preds: Sequence[ScoredSpan],
    threshold: float,
    mode: str = "sentence",
    sentence_confidence: float | None = None,
) -> tuple[list[Span], str, str]:
    """:meth:`SelectionPolicy.select` of ``SelectionPolicy(threshold, mode)`` (``ValueError`` for a
    bad threshold or mode too)."""
    return SelectionPolicy(threshold, mode).select(preds, sentence_confidence)


def unsure_ranges(
    length: int,
    preds: Sequence[ScoredSpan],
    kept: Sequence[Span],
    threshold: float,
    token_confidence: Sequence[float] | None = None,
) -> list[tuple[int, int]]:
    """:meth:`SelectionPolicy.unsure` of a partial policy with ``threshold``."""
    return SelectionPolicy(threshold, "partial").unsure(length, preds, kept, token_confidence)
