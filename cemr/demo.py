"""The embedded demo corpus: a seeded, synthetic set of Chinese EMR records with gold spans.

Nothing here is patient data. Records are built from section templates in the style of CCKS2017
EMRs (主诉 / 现病史 / 既往史 / 查体 / 辅助检查 / 诊疗经过 / 诊断), whose entity slots are filled
from a built-in term list (``cemr/demo/*.txt``, about 400 terms over the five CCKS2017 types) and
whose other slots (days, years, dates, vital signs, lab values) are random numbers. A template is
written with slots ``{SYM}``, ``{BODY}``, ``{EXAM}``, ``{DIS}``, ``{TRT}`` (an entity of that type),
``{SYM=压痛}`` (a fixed term of that type) and value slots such as ``{DAYS}`` or ``{DATE}``.

What makes it useful for self-training:

* some terms of every type (``unlabeled_fraction``, 20 %) occur **only in the unlabeled texts**:
  a tagger trained on the labeled records has to generalise to them;
* a few terms are **ambiguous** (贫血, 黄疸, 高血压, 心律失常 are listed both as 疾病和诊断 and as
  症状和体征; the slot decides), and many are nested in others (心脏 / 心脏彩超, 血压 / 高血压);
* term frequencies are Zipf-like (a few frequent terms, a long tail);
* the unlabeled texts contain duplicates as real corpora do (``duplicate_rate``, 6 %): exact
  copies differing only in whitespace or full-width digits, near copies (one number changed in a
  long text), and copies of labeled records (leakage if that record lands in dev/test). Each
  unlabeled document says what it is in ``meta["origin"]`` (``generated``, ``exact_copy``,
  ``near_copy``, ``labeled_copy``) and ``meta["copy_of"]``.

The gold spans of the unlabeled texts are kept apart, in ``DemoCorpus.unlabeled_gold``: they let
pseudo-labels be scored, and are never part of an unlabeled ``Document``.

``generate_demo(n_docs, n_unlabeled, seed)`` is deterministic: the same arguments give the same
corpus (texts, spans, ids) in any process. It is what ``data.format: demo`` trains on
(:func:`training_corpus`). ``cemr demo`` writes other documents by default,
:func:`generate_new_demo`'s: drawn the same way, none of their texts equal to or inside a text of
that training corpus, so predicting on them (``cemr predict``) or scoring them (``cemr evaluate``)
shows what a model does with text it has not seen (:func:`demo_corpus`: ``new`` or ``training``).
"""
from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cemr.corpus.document import Document, Span

DISEASE, SYMPTOM, BODY, EXAM, TREATMENT = "疾病和诊断", "症状和体征", "身体部位", "检查和检验", "治疗"
TYPES = (DISEASE, SYMPTOM, BODY, EXAM, TREATMENT)

TERM_FILES = {
    DISEASE: "disease.txt",
    SYMPTOM: "symptom.txt",
    BODY: "body.txt",
    EXAM: "exam.txt",
    TREATMENT: "treatment.txt",
}
SLOT_TYPES = {"DIS": DISEASE, "SYM": SYMPTOM, "BODY": BODY, "EXAM": EXAM, "TRT": TREATMENT}

# Section templates. Each record takes one template of most sections (see _RECORD_PLAN).
SECTIONS: dict[str, tuple[str, ...]] = {
    "header": (
        "患者{SEX}，{AGE}岁，因“{SYM:complaint}{DAYS}天”于{DATE}入院。",
        "患者{SEX}，{AGE}岁，{DATE}因{DIS}收入我科。",
    ),
    "complaint": (
        "主诉：{SYM:complaint}{DAYS}天。",
        "主诉：{SYM:complaint}伴{SYM:complaint}{DAYS}天。",
        "主诉：反复{SYM:complaint}{YEARS}年，加重{DAYS}天。",
        "主诉：{BODY}{SYM=疼痛}{HOURS}小时。",
        "主诉：发现{DIS}{YEARS}年，{SYM:complaint}{DAYS}天。",
    ),
    "history": (
        "现病史：患者{YEARS}年前无明显诱因出现{SYM:complaint}，伴{SYM:complaint}，无{SYM:complaint}，"
        "于当地医院行{EXAM:imaging}示{DIS}，予{TRT:drug}等治疗后好转。",
        "现病史：患者于{DATE}出现{BODY}{SYM=疼痛}，呈持续性，伴{SYM:complaint}、{SYM:complaint}，"
        "为求进一步诊治来我院就诊。",
        "现病史：患者{DAYS}天前无明显诱因出现{SYM:complaint}，自行服用{TRT:drug}后症状无缓解，"
        "今为求诊治入院。",
        "现病史：患者因{SYM:complaint}{DAYS}天入院，查体：{BODY}{SYM=压痛}，{EXAM:imaging}示{DIS}，"
        "予{TRT:therapy}治疗。",
        "现病史：患者{DATE}因{DIS}于我院行{TRT:surgery}，术后恢复可，{DAYS}天前再次出现{SYM:complaint}。",
    ),
    "past": (
        "既往史：{DIS}病史{YEARS}年，规律口服{TRT:drug}治疗，控制可。",
        "既往史：否认{DIS}、{DIS}病史，{YEARS}年前行{TRT:surgery}。",
        "既往史：既往体健，否认{DIS}病史。",
    ),
    "physical": (
        "查体：{EXAM=体温}{TEMP}℃，{EXAM=脉搏}{PULSE}次/分，{EXAM=呼吸}{RR}次/分，"
        "{EXAM=血压}{BP}mmHg，神志清，精神可。",
        "查体：{BODY}无{SYM:sign}，{BODY}{SYM:sign}，{BODY}未触及{SYM:sign}。",
        "查体：{BODY}{SYM=压痛}，无{SYM=反跳痛}，{BODY}可闻及{SYM:sign}。",
        "专科检查：{BODY}{SYM:sign}，{BODY}{SYM:sign}，{BODY}活动可。",
    ),
    "auxiliary": (
        "辅助检查：{EXAM:imaging}示{DIS}。",
        "辅助检查：{EXAM:panel}：{EXAM:item}{VAL}g/L，{EXAM:item}{VAL}×10^9/L，{EXAM:item}{VAL}mmol/L。",
        "辅助检查：{DATE}我院{EXAM:imaging}提示{BODY}{SYM:sign}，考虑{DIS}可能。",
        "辅助检查：{EXAM:panel}、{EXAM:panel}未见明显异常。",
    ),
    "course": (
        "诊疗经过：入院后完善{EXAM:panel}、{EXAM:imaging}等检查，予{TRT:therapy}、{TRT:drug}等对症支持"
        "治疗，患者{SYM:complaint}较前好转。",
        "诊疗经过：于{DATE}在全麻下行{TRT:surgery}，手术顺利，术后予{TRT:therapy}、{TRT:drug}治疗。",
        "诊疗经过：予{TRT:therapy}治疗，复查{EXAM:panel}未见明显异常，病情好转出院。",
        "诊疗经过：给予{TRT:drug}{DOSE}mg口服，每日{TIMES}次，{DAYS}天后{SYM:complaint}消失。",
    ),
    "diagnosis": (
        "出院诊断：1.{DIS}；2.{DIS}。",
        "初步诊断：{DIS}。",
    ),
}
# (section, probability that a labeled record has it); unlabeled texts are 1-4 random sections
_RECORD_PLAN = (
    ("header", 0.5),
    ("complaint", 0.9),
    ("history", 1.0),
    ("past", 0.5),
    ("physical", 1.0),
    ("physical", 0.5),
    ("auxiliary", 0.9),
    ("auxiliary", 0.4),
    ("course", 0.9),
    ("diagnosis", 0.6),
)

_SLOT_RE = re.compile(r"\{([A-Z]+)(?::([a-z]+))?(?:=([^}]+))?\}")
_ZIPF_EXPONENT = 0.8
_FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


# ----------------------------------------------------------------------------------------------
# Terms
# ----------------------------------------------------------------------------------------------


def parse_term_lines(text: str) -> list[tuple[str, str]]:
    """``(term, group)`` pairs of a term-list file, in file order.

    One term per line; blank lines and ``#`` comments are skipped; a line ``[name]`` starts the
    group ``name`` (terms before any such line are in group ``""``). A repeated term raises
    ``ValueError`` naming the line.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    group = ""
    for number, line in enumerate(text.splitlines(), 1):
        term = line.strip()
        if not term or term.startswith("#"):
            continue
        if term.startswith("[") and term.endswith("]"):
            group = term[1:-1].strip()
            continue
        if term in seen:
            raise ValueError(f"line {number}: term {term!r} listed twice")
        seen.add(term)
        out.append((term, group))
    return out


@functools.cache
def _load_terms() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    out = []
    pkg = resources.files("cemr") / "demo"
    for type_, name in TERM_FILES.items():
        try:
            terms = parse_term_lines((pkg / name).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"cemr/demo/{name}: {exc}") from None
        out.append((type_, tuple(terms)))
    return tuple(out)


def load_terms() -> dict[str, list[str]]:
    """The built-in term list: ``{type: [term, ...]}`` in file order (a fresh copy)."""
    return {t: [term for term, _ in pairs] for t, pairs in _load_terms()}


def term_groups() -> dict[str, dict[str, str]]:
    """``{type: {term: group}}`` of the built-in terms (``{TRT:drug}`` draws from group drug)."""
    return {t: dict(pairs) for t, pairs in _load_terms()}


def template_slots() -> list[tuple[str, str | None, str | None]]:
    """Every entity slot of the templates as ``(type, group, fixed term)``."""
    out = []
    for templates in SECTIONS.values():
        for template in templates:
            for m in _SLOT_RE.finditer(template):
                if m.group(1) in SLOT_TYPES:
                    out.append((SLOT_TYPES[m.group(1)], m.group(2), m.group(3)))
    return out


def fixed_terms() -> dict[str, set[str]]:
    """Terms written into the templates (``{EXAM=体温}``): ``{type: {term, ...}}``."""
    out: dict[str, set[str]] = {}
    for type_, _, fixed in template_slots():
        if fixed is not None:
            out.setdefault(type_, set()).add(fixed)
    return out


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------


@dataclass
class DemoCorpus:
    """A generated demo corpus.

    ``labeled``: records with gold spans; ``unlabeled``: texts without spans (ids ``demo-u*``);
    ``unlabeled_gold``: the gold spans of each unlabeled text (by id), for scoring only;
    ``terms``: the full term list by type; ``unlabeled_only``: the terms that never occur in a
    labeled record.
    """

    labeled: list[Document]
    unlabeled: list[Document]
    terms: dict[str, list[str]]
    unlabeled_only: dict[str, list[str]] = field(default_factory=dict)
    unlabeled_gold: dict[str, list[Span]] = field(default_factory=dict)
    seed: int = 0
    kind: str = "training"  # "new": generate_new_demo's, none of whose texts is in ``unlike``'s
    unlike: dict[str, int] | None = None  # the training corpus it was kept apart from (sizes, seed)
    redrawn: int = 0  # texts drawn again because the training corpus had them


class _TermSampler:
    """Zipf-like draws of terms per (type, group), without the ``excluded`` terms."""

    def __init__(self, terms: dict[str, list[str]], groups: dict[str, dict[str, str]],
                 rng: random.Random):
        self._groups = groups
        self._ranked: dict[str, list[str]] = {}
        for type_, ts in terms.items():
            ranked = list(ts)
            rng.shuffle(ranked)  # which terms are frequent depends on the seed
            self._ranked[type_] = ranked
        self._cache: dict[tuple[str, str | None, frozenset[str]],
                          tuple[list[str], list[float]]] = {}

    def table(self, type_: str, group: str | None, excluded: frozenset[str]
              ) -> tuple[list[str], list[float]]:
        """``(terms, cumulative weights)`` of a type (and group; None: all) minus ``excluded``."""
        key = (type_, group, excluded)
        if key not in self._cache:
            pairs = [
                (term, 1.0 / (rank + 1) ** _ZIPF_EXPONENT)
                for rank, term in enumerate(self._ranked[type_])
                if term not in excluded and (group is None or self._groups[type_][term] == group)
            ]
            if not pairs:
                raise ValueError(f"no term of type {type_} in group {group!r} left to draw")
            cum, total = [], 0.0
            for _, w in pairs:
                total += w
                cum.append(total)
            self._cache[key] = ([t for t, _ in pairs], cum)
        return self._cache[key]


def _value(slot: str, rng: random.Random) -> str:
    """A random filler for a non-entity slot."""
    if slot == "DAYS":
        return str(rng.randint(1, 30))
    if slot == "YEARS":
        return str(rng.randint(1, 20))
    if slot == "HOURS":
        return str(rng.randint(2, 72))
    if slot == "AGE":
        return str(rng.randint(18, 90))
    if slot == "SEX":
        return rng.choice(("男", "女"))
    if slot == "DATE":
        y, m, d = rng.randint(2012, 2017), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice((f"{y}-{m:02d}-{d:02d}", f"{y}年{m}月{d}日"))
    if slot == "TEMP":
        return f"{rng.uniform(36.0, 39.8):.1f}"
    if slot == "PULSE":
        return str(rng.randint(55, 130))
    if slot == "RR":
        return str(rng.randint(14, 28))
    if slot == "BP":
        return f"{rng.randint(95, 180)}/{rng.randint(55, 110)}"
    if slot == "VAL":
        return f"{rng.uniform(0.5, 150.0):.1f}"
    if slot == "DOSE":
        return str(rng.choice((5, 10, 20, 25, 40, 50, 100, 200, 500)))
    if slot == "TIMES":
        return str(rng.randint(1, 3))
    raise ValueError(f"unknown template slot {{{slot}}}")


# A filled template: per slot either ("E", type, term) for an entity or ("V", slot, text).
Fill = tuple[str, str, str]


def _fill(template: str, rng: random.Random, sampler: _TermSampler, excluded: frozenset[str]
          ) -> list[Fill]:
    fills: list[Fill] = []
    for m in _SLOT_RE.finditer(template):
        slot, group, fixed = m.group(1), m.group(2), m.group(3)
        if slot in SLOT_TYPES:
            type_ = SLOT_TYPES[slot]
            if fixed is None:
                terms, cum = sampler.table(type_, group, excluded)
                fixed = rng.choices(terms, cum_weights=cum)[0]
            fills.append(("E", type_, fixed))
        else:
            fills.append(("V", slot, _value(slot, rng)))
    return fills


def render(template: str, fills: Sequence[Fill]) -> tuple[str, list[Span]]:
    """Text and spans (end exclusive) of a template with its slot fillers."""
    parts: list[str] = []
    spans: list[Span] = []
    pos, length = 0, 0
    slots = list(_SLOT_RE.finditer(template))
    if len(slots) != len(fills):
        raise ValueError(f"template has {len(slots)} slots, got {len(fills)} fillers: {template}")
    for m, (kind, what, filler) in zip(slots, fills):
        literal = template[pos : m.start()]
        parts.append(literal)
        length += len(literal)
        if kind == "E":
            spans.append(Span(length, length + len(filler), what))
        parts.append(filler)
        length += len(filler)
        pos = m.end()
    parts.append(template[pos:])
    return "".join(parts), spans


# A record plan: the (template, fills) of its sections, so a near copy can change one value.
Plan = list[tuple[str, list[Fill]]]


def _render_plan(plan: Plan) -> tuple[str, list[Span]]:
    text, spans = "", []
    for template, fills in plan:
        piece, piece_spans = render(template, fills)
        spans.extend(s.shifted(len(text)) for s in piece_spans)
        text += piece
    return text, spans


def _labeled_plan(rng: random.Random, sampler: _TermSampler, excluded: frozenset[str]) -> Plan:
    plan: Plan = []
    for section, p in _RECORD_PLAN:
        if rng.random() < p:
            template = rng.choice(SECTIONS[section])
            plan.append((template, _fill(template, rng, sampler, excluded)))
    return plan


def _unlabeled_plan(rng: random.Random, sampler: _TermSampler) -> Plan:
    names = [s for s in SECTIONS if s != "header"]
    k = rng.randint(1, 4)
    chosen = sorted(rng.sample(range(len(names)), k))  # sections in record order
    plan: Plan = []
    for i in chosen:
        template = rng.choice(SECTIONS[names[i]])
        plan.append((template, _fill(template, rng, sampler, frozenset())))
    return plan


_SHORT_VALUES = ("DAYS", "YEARS", "HOURS", "AGE", "PULSE", "RR", "TIMES", "DOSE")


def _near_copy(plan: Plan, rng: random.Random) -> Plan | None:
    """The plan with one short numeric slot re-drawn to a different value (None if it has none).

    Only 1-3 characters change, so a copy of a text of >= 150 characters keeps a char 5-gram
    Jaccard similarity above 0.9 with its source.
    """
    slots = [
        (i, j)
        for i, (_, fills) in enumerate(plan)
        for j, (kind, slot, _) in enumerate(fills)
        if kind == "V" and slot in _SHORT_VALUES
    ]
    if not slots:
        return None
    i, j = rng.choice(slots)
    template, fills = plan[i]
    _, slot, old = fills[j]
    new = old
    for _ in range(20):
        new = _value(slot, rng)
        if new != old:
            break
    if new == old:
        return None
    fills = list(fills)
    fills[j] = ("V", slot, new)
    out = list(plan)
    out[i] = (template, fills)
    return out


def _cosmetic_variant(text: str, spans: list[Span], rng: random.Random) -> tuple[str, list[Span]]:
    """Text and spans that normalise to the same as the input: full-width digits outside the
    mentions, or a stray space inserted at a position outside every mention."""
    covered = {p for s in spans for p in range(s.start, s.end)}
    digits = [p for p, c in enumerate(text) if c.isdigit() and p not in covered]
    if rng.random() < 0.5 and digits:
        chars = list(text)
        for p in digits:
            chars[p] = chars[p].translate(_FULL_WIDTH_DIGITS)
        return "".join(chars), list(spans)
    inside = {p for s in spans for p in range(s.start + 1, s.end)}
    cuts = [p for p in range(1, len(text)) if p not in inside]
    if not cuts:
        return text + " ", list(spans)
    cut = rng.choice(cuts)
    moved = [s if s.end <= cut else s.shifted(1) for s in spans]
    return text[:cut] + " " + text[cut:], moved


def _choose_unlabeled_only(
    terms: dict[str, list[str]], groups: dict[str, dict[str, str]], fraction: float,
    rng: random.Random,
) -> dict[str, list[str]]:
    """Per type and group, ``fraction`` of the terms (rounded; never an ambiguous term, one
    written into a template, or the last drawable term of a group)."""
    counts: dict[str, int] = {}
    for ts in terms.values():
        for t in ts:
            counts[t] = counts.get(t, 0) + 1
    fixed = fixed_terms()
    out: dict[str, list[str]] = {}
    for type_, ts in terms.items():
        chosen: list[str] = []
        for group in dict.fromkeys(groups[type_][t] for t in ts):
            members = [t for t in ts if groups[type_][t] == group]
            eligible = [t for t in members if counts[t] == 1 and t not in fixed.get(type_, set())]
            k = min(len(eligible), round(fraction * len(members)), len(members) - 1)
            chosen.extend(rng.sample(eligible, k))
        out[type_] = sorted(chosen)
    return out


COPY_KINDS = ("exact_copy", "near_copy", "labeled_copy")


def _copy(kind: str, rng: random.Random, labeled: list[Document], unlabeled: list[Document],
          gold: dict[str, list[Span]], plans: list[Plan]
          ) -> tuple[dict[str, str], str, list[Span], Plan] | None:
    """``(meta, text, gold spans, plan)`` of a copy of an earlier text, or None when there is
    nothing of that kind to copy yet."""
    if kind == "labeled_copy" and labeled:
        src = rng.choice(labeled)
        return {"origin": kind, "copy_of": src.id}, src.text, list(src.spans), []
    if kind == "exact_copy" and unlabeled:
        k = rng.randrange(len(unlabeled))
        text, spans = _cosmetic_variant(unlabeled[k].text, gold[unlabeled[k].id], rng)
        return {"origin": kind, "copy_of": unlabeled[k].id}, text, spans, plans[k]
    if kind == "near_copy":
        long_ones = [k for k, d in enumerate(unlabeled) if len(d.text) >= 150 and plans[k]]
        if long_ones:
            k = rng.choice(long_ones)
            plan = _near_copy(plans[k], rng)
            if plan is not None:
                text, spans = _render_plan(plan)
                return {"origin": kind, "copy_of": unlabeled[k].id}, text, spans, plan
    return None


def generate_demo(
    n_docs: int = 240,
    n_unlabeled: int = 2000,
    seed: int = 7,
    *,
    unlabeled_fraction: float = 0.2,
    duplicate_rate: float = 0.06,
) -> DemoCorpus:
    """Generate the demo corpus (deterministic for the arguments).

    ``n_docs`` labeled records (ids ``demo-00000``...), ``n_unlabeled`` unlabeled texts (ids
    ``demo-u00000``...), of which about ``duplicate_rate`` are copies (see the module docstring);
    ``unlabeled_fraction`` of each type's terms occur only in unlabeled texts.
    """
    _check_sizes(n_docs, n_unlabeled, unlabeled_fraction, duplicate_rate)
    return _generate(n_docs, n_unlabeled, random.Random(seed), seed, "demo", unlabeled_fraction,
                     duplicate_rate)


def training_corpus(data: Any = None) -> DemoCorpus:
    """The corpus an experiment with ``data.format: demo`` trains on (``data``: its
    ``cemr.config.DataConfig``; default: the default config's, which is also what
    ``ray_configs/experiments/demo.yaml`` uses): labeled records and unlabeled texts both, since
    self-training and pretraining read the unlabeled ones."""
    if data is None:
        from cemr.config import DataConfig

        data = DataConfig()
    return generate_demo(data.demo_documents, data.demo_unlabeled, data.demo_seed)


def generate_new_demo(
    n_docs: int = 240,
    n_unlabeled: int = 2000,
    seed: int = 7,
    *,
    training: DemoCorpus | None = None,
    unlabeled_fraction: float = 0.2,
    duplicate_rate: float = 0.06,
) -> DemoCorpus:
    """Demo documents a model trained on ``training`` (default: :func:`training_corpus`) has not
    seen: drawn as :func:`generate_demo` draws them (same templates, terms and proportions) from
    a random generator of their own (seeded by ``"cemr demo new <seed>"``, so no ``seed`` gives
    the training draw), ids ``demo-new-00000`` and ``demo-new-u00000``..., and every text equal
    to or contained in a text of ``training`` (compared normalised: whitespace, full-width digits
    and case do not count, :func:`cemr.corpus.dedup.normalize`) drawn again; ``redrawn`` counts
    those. Deterministic for the arguments and ``training``."""
    from cemr.corpus.dedup import normalize

    _check_sizes(n_docs, n_unlabeled, unlabeled_fraction, duplicate_rate)
    if training is None:
        training = training_corpus()
    # one string holding every training text, separated by a character no normalised text has
    seen_text = "\x00".join(normalize(d.text) for d in [*training.labeled, *training.unlabeled])

    def seen(text: str) -> bool:
        return normalize(text) in seen_text

    corpus = _generate(n_docs, n_unlabeled, random.Random(f"cemr demo new {seed}"), seed, "demo-new",
                       unlabeled_fraction, duplicate_rate, seen)
    corpus.kind = "new"
    corpus.unlike = {"documents": len(training.labeled), "unlabeled": len(training.unlabeled),
                     "seed": training.seed}
    return corpus


_MAX_REDRAWS = 1000  # in a row: the training corpus holds (nearly) every text there is to draw


def _check_sizes(n_docs: int, n_unlabeled: int, unlabeled_fraction: float, duplicate_rate: float) -> None:
    if n_docs < 0 or n_unlabeled < 0:
        raise ValueError(f"n_docs and n_unlabeled must be >= 0, got {n_docs}, {n_unlabeled}")
    if not 0.0 <= unlabeled_fraction < 1.0:
        raise ValueError(f"unlabeled_fraction must be in [0, 1), got {unlabeled_fraction}")
    if not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError(f"duplicate_rate must be in [0, 1], got {duplicate_rate}")


def _generate(n_docs: int, n_unlabeled: int, rng: random.Random, seed: int, prefix: str,
              unlabeled_fraction: float, duplicate_rate: float,
              seen: Callable[[str], bool] | None = None) -> DemoCorpus:
    """The corpus drawn with ``rng``; a text for which ``seen`` is true is drawn again (and counted)."""
    terms = load_terms()
    groups = term_groups()
    only = _choose_unlabeled_only(terms, groups, unlabeled_fraction, rng)
    # a term that is unlabeled-only for its type never appears in a labeled record (an ambiguous
    # term is never chosen, so excluding by string is exact)
    excluded = frozenset(t for ts in only.values() for t in ts)
    sampler = _TermSampler(terms, groups, rng)
    redrawn = 0

    def draw(make: Callable[[], tuple[Any, ...]], what: str) -> tuple[Any, ...]:
        nonlocal redrawn
        for _ in range(_MAX_REDRAWS):
            got = make()
            if seen is None or not seen(got[1]):
                return got
            redrawn += 1
        raise ValueError(f"{_MAX_REDRAWS} {what} texts in a row were already in the training corpus: "
                         f"nothing new left to draw")

    labeled: list[Document] = []
    for i in range(n_docs):
        _, text, spans = draw(lambda: (None, *_render_plan(_labeled_plan(rng, sampler, excluded))), "labeled")
        labeled.append(Document(f"{prefix}-{i:05d}", text, spans, source="demo"))

    unlabeled: list[Document] = []
    gold: dict[str, list[Span]] = {}
    plans: list[Plan] = []  # per unlabeled text ([] for a copy of a labeled record)

    def one_unlabeled() -> tuple[dict[str, str], str, list[Span], Plan]:
        copy = None
        if rng.random() < duplicate_rate:
            copy = _copy(rng.choice(COPY_KINDS), rng, labeled, unlabeled, gold, plans)
        if copy is not None:
            return copy
        plan = _unlabeled_plan(rng, sampler)
        text, spans = _render_plan(plan)
        return {"origin": "generated"}, text, spans, plan

    for i in range(n_unlabeled):
        meta, text, spans, plan = draw(one_unlabeled, "unlabeled")
        doc_id = f"{prefix}-u{i:05d}"
        plans.append(plan)
        unlabeled.append(Document(doc_id, text, [], source="demo", meta=meta))
        gold[doc_id] = sorted(spans)
    return DemoCorpus(labeled, unlabeled, terms, only, gold, seed, redrawn=redrawn)


# ----------------------------------------------------------------------------------------------
# On disk
# ----------------------------------------------------------------------------------------------


DEMO_KINDS = ("new", "training")


def demo_corpus(kind: str = "new", n_docs: int = 240, n_unlabeled: int = 2000, seed: int = 7) -> DemoCorpus:
    """What ``cemr demo`` writes: ``new`` (the default), documents the demo experiment never
    trains on (:func:`generate_new_demo`, kept apart from :func:`training_corpus`); ``training``,
    :func:`generate_demo` of the arguments (with the defaults: the demo experiment's own corpus,
    to train on it from files or to look at it)."""
    if kind == "new":
        return generate_new_demo(n_docs, n_unlabeled, seed)
    if kind == "training":
        return generate_demo(n_docs, n_unlabeled, seed)
    raise ValueError(f"demo corpus {kind!r}: expected one of {', '.join(DEMO_KINDS)}")


def write_demo(corpus: DemoCorpus, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the corpus for CLI use; returns the paths by role.

    * ``labeled``: ``labeled.jsonl`` in cemr's JSON-lines format (read it with format ``jsonl``);
    * ``unlabeled``: ``unlabeled.txt``, one text per line (format ``text``);
    * ``unlabeled_gold``: ``unlabeled_gold.jsonl``, the unlabeled texts with their gold spans;
    * ``terms``: ``terms/<type>.txt``, one term per line (a lexicon source per type);
    * ``demo.json``: sizes, seed, which corpus it is (``corpus``: ``new`` or ``training``; for
      ``new``, the training corpus it is kept apart from, ``unlike``, and ``redrawn``).

    The directory appears complete or not at all (:func:`cemr.outputs.atomic_dir`); one that
    exists and is not empty is replaced only with ``overwrite`` (:class:`cemr.outputs.OutputError`).
    """
    from cemr.outputs import atomic_dir

    final = Path(out_dir)
    names = {"labeled": "labeled.jsonl", "unlabeled": "unlabeled.txt", "unlabeled_gold": "unlabeled_gold.jsonl",
             "terms": "terms"}
    empty = final.is_dir() and not any(final.iterdir())
    with atomic_dir(final, overwrite=overwrite or empty) as out:
        _write_demo_files(corpus, out, {k: out / v for k, v in names.items()})
    return {k: final / v for k, v in names.items()}


def _write_demo_files(corpus: DemoCorpus, out: Path, paths: dict[str, Path]) -> None:
    from cemr.corpus.writers import write_jsonl

    write_jsonl(corpus.labeled, paths["labeled"])
    with open(paths["unlabeled"], "w", encoding="utf-8", newline="\n") as fh:
        for doc in corpus.unlabeled:
            if "\n" in doc.text or "\r" in doc.text:
                raise ValueError(f"unlabeled text {doc.id} holds a line break")
            fh.write(doc.text + "\n")
    gold_docs = (
        Document(d.id, d.text, corpus.unlabeled_gold.get(d.id, []), d.source, d.meta)
        for d in corpus.unlabeled
    )
    write_jsonl(gold_docs, paths["unlabeled_gold"])
    paths["terms"].mkdir(exist_ok=True)
    for type_, terms in corpus.terms.items():
        (paths["terms"] / f"{type_}.txt").write_text("".join(t + "\n" for t in terms),
                                                     encoding="utf-8")
    (out / "demo.json").write_text(
        json.dumps(
            {
                "corpus": corpus.kind,
                **({"unlike": corpus.unlike, "redrawn": corpus.redrawn} if corpus.unlike else {}),
                "seed": corpus.seed,
                "labeled": len(corpus.labeled),
                "unlabeled": len(corpus.unlabeled),
                "unlabeled_only": corpus.unlabeled_only,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
