"""Medical lexicon (term -> entity type) and bidirectional maximum matching (BMM).

The dictionary feature of BiLM_BNER tags every char ``B-TYPE`` / ``I-TYPE`` / ``O`` by matching a
medical lexicon against the text. One module per step:

* :mod:`~cemr.lexicon.filters`: the noise filter every candidate term passes (:class:`TermFilter`).
* :mod:`~cemr.lexicon.sources`: votes ``term -> {type: count}`` from public term lists (one vote per
  term per list), in-memory terms and training mentions (one vote per mention);
  :mod:`~cemr.lexicon.files` reads their UTF-8 line files.
* :mod:`~cemr.lexicon.voting`: one type per term, the most votes, ties broken by a fixed type
  order (the preset's order, else alphabetical).
* :mod:`~cemr.lexicon.accounting`: every input line and mention is accounted for in a
  :class:`LexiconReport` (kept, duplicate, or rejected with a reason); nothing is dropped silently.
* :mod:`~cemr.lexicon.presets`: ``ccks2017`` and ``yidu`` map the shared public lists
  (``$CEMR_DATA_DIR/lexicons``) to each corpus's types; ``ccks2017_all`` and ``yidu_all`` add the
  noisy kyzhouhzau fragment lists. The presets are data files, ``cemr/lexicon/presets/*.yaml``.
* :mod:`~cemr.lexicon.builder`: :class:`LexiconBuilder` and :func:`build_lexicon` (from a
  ``LexiconConfig``).
* :mod:`~cemr.lexicon.lexicon`: the :class:`Lexicon` mapping, :meth:`Lexicon.save` / ``load``.
* :mod:`~cemr.lexicon.trie`: one trie over all terms (:class:`TermIndex`); a single left-to-right
  :meth:`Matcher.scan` records, per position, the longest term starting there (FMM) and ending
  there (BMM).
* :mod:`~cemr.lexicon.matching`: :func:`bmm` (typed spans) and :func:`bmm_tags` (BIO per char)
  pick FMM or BMM wherever the two disagree (rules in :func:`choose_words`); :func:`all_words`
  lists every occurrence of every term (the match sets of the dictionary feature).
* :mod:`~cemr.lexicon.folds`: :class:`FoldedLexicon` / :func:`build_folded_lexicon` match each
  training document against a lexicon built without its own fold's mentions (terms of the
  external lists always stay); all folds share one trie.

All offsets are 0-based char offsets; spans are end exclusive (``text[start:end]``), like
:class:`cemr.corpus.document.Span`.
"""
from cemr.lexicon.accounting import LexiconReport, SourceReport
from cemr.lexicon.builder import LexiconBuilder, build_lexicon, builder_from_config
from cemr.lexicon.filters import TermFilter
from cemr.lexicon.folds import FoldedLexicon, build_folded_lexicon, doc_fold
from cemr.lexicon.lexicon import Lexicon
from cemr.lexicon.matching import (
    all_words,
    backward_max_match,
    bio_labels,
    bmm,
    bmm_tags,
    bmm_words,
    bmm_words_of_matches,
    choose_words,
    forward_max_match,
    words_to_tags,
)
from cemr.lexicon.presets import PRESETS, Preset, PresetError, get_preset, lexicons_dir
from cemr.lexicon.sources import read_source
from cemr.lexicon.trie import Matcher, TermIndex
from cemr.lexicon.voting import resolve_type

__all__ = [
    "TermFilter",
    "SourceReport",
    "LexiconReport",
    "Preset",
    "PresetError",
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
    "bmm_words_of_matches",
    "all_words",
    "words_to_tags",
    "bmm",
    "bmm_tags",
    "bio_labels",
    "doc_fold",
    "FoldedLexicon",
    "build_folded_lexicon",
]
