"""Accounting of a lexicon build: what each source contributed and how type conflicts were settled."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping


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

    def count_terms(self, terms: Mapping[str, str]) -> None:
        """Record the final lexicon's size and per-type counts (``terms``: term -> type)."""
        self.terms = len(terms)
        self.type_counts = Counter(terms.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [s.to_dict() for s in self.sources],
            "terms": self.terms,
            "type_counts": dict(sorted(self.type_counts.items())),
            "conflicts": self.conflicts,
            "ties": self.ties,
            "conflict_examples": [list(e) for e in self.conflict_examples],
        }
