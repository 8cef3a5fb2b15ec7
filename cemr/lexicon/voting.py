"""Votes ``term -> {type: count}`` and their resolution to one type per term."""
from __future__ import annotations

from collections import Counter
from typing import Callable, Mapping, Sequence

from cemr.lexicon.accounting import LexiconReport

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

