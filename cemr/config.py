"""One typed configuration tree, loaded from YAML and checked whole before any stage runs.

Every section is a plain dataclass (the code base reads attributes from it). Each key carries its
rule in the field's metadata (:class:`Rule`: meaning, allowed values, range), read by one
validator and by :func:`config_reference` (``python -m cemr.config --reference > docs/config.md``).
Rules that tie keys together are :data:`CROSS_RULES`. :func:`load_config` reports every problem at
once in one :class:`ConfigError` (the file and line:column of each key, or the override that set
it): unknown keys (with the closest known key), types, choices, ranges and cross-key rules.
Overrides are ``key=value`` (``train.epochs=3``, values parsed as YAML). Paths may use
``${CEMR_DATA_DIR}`` (default ``../shared/data``) and other environment variables. Builder
functions elsewhere turn sections into flat constructor arguments: model code never receives a
config object it does not need.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml


class ConfigError(ValueError):
    """A configuration problem, naming the file (when known) and the dotted key.

    ``problems``: every :class:`Problem` found (empty for a single problem raised directly).
    """

    def __init__(self, message: str, problems: Sequence["Problem"] = ()):
        super().__init__(message)
        self.problems = list(problems)


def data_dir() -> str:
    """The public data sets: ``$CEMR_DATA_DIR``, else ``shared/data`` beside the checkout."""
    env = os.environ.get("CEMR_DATA_DIR")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "shared" / "data")


def expand_path(value: str | None) -> str | None:
    """Expand ``${CEMR_DATA_DIR}``, other ``${VAR}`` and ``~`` in a configured path."""
    if value is None:
        return None
    env = dict(os.environ)
    env["CEMR_DATA_DIR"] = data_dir()
    out = value
    for key, val in env.items():
        out = out.replace("${" + key + "}", val)
    return os.path.expanduser(out)


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------


def _code_choices(module: str, name: str, extra: str | None = None) -> Callable[[], tuple[str, ...]]:
    """The allowed values kept in the code that uses them (``module.name``; a mapping gives its
    keys; ``extra`` names a second attribute whose keys are added, e.g. aliases). Imported when a
    config is checked, not when this module is: ``cemr.lexicon`` imports this module."""

    def load() -> tuple[str, ...]:
        mod = importlib.import_module(module)
        values = tuple(getattr(mod, name))
        if extra is not None:
            values += tuple(getattr(mod, extra))
        return values

    load.__qualname__ = f"{module}.{name}"
    return load


def _labeled_formats() -> tuple[str, ...]:
    from cemr.corpus.readers import INPUT_FORMATS

    return ("demo", *(f for f in INPUT_FORMATS if f != "text"))


CONFIDENCE_METHODS = _code_choices("cemr.selection", "METHODS", "ALIASES")
SELECTION_MODES = _code_choices("cemr.selection", "SELECTION_MODES")
BOOKKEEPING_MODES = _code_choices("cemr.selftrain", "BOOKKEEPING_MODES")
LEXICON_PRESETS = _code_choices("cemr.lexicon", "PRESETS")
OVERLAP_POLICIES = _code_choices("cemr.corpus.validate", "POLICIES")
CORPUS_FORMATS = _code_choices("cemr.corpus.readers", "INPUT_FORMATS")
LEXICON_FORMATS = _code_choices("cemr.lexicon.sources", "FORMATS")
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"
BERT_AUTOCAST = ("off", "bf16", "fp16")  # cemr.features.bert.AUTOCAST_DTYPES
AMP_DTYPES = ("float16", "bfloat16")  # cemr.training.AMP_DTYPES
PREDICTOR_PRECISIONS = ("fp32", "bf16", "int8", "bf16-int8")  # cemr.predictor.PRECISIONS


@dataclass(frozen=True)
class Rule:
    """What a key means and what values it takes (``None`` always passes when the type allows it).

    ``choices``: the allowed values, or a function returning them (values kept in code);
    ``kind``: what a choice is, for messages ("a confidence method"); ``ge``/``gt``/``le``/``lt``:
    bounds; ``nonempty``: a string (or every string of a list) must not be blank; ``pattern``: a
    full-match regular expression, described by ``allowed``.
    """

    help: str
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    kind: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    nonempty: bool = False
    pattern: str | None = None
    allowed: str | None = None

    def choice_values(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def range_text(self) -> str | None:
        """``>= 1``, ``[0, 1)``, ``> 0``... or None when unbounded."""
        lo = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        hi = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if lo and hi:
            return f"{lo}, {hi}"
        if lo:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if hi:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return None

    def allowed_text(self) -> str:
        """The allowed values in words (for messages and the reference); '' when any value of the type."""
        parts = []
        values = self.choice_values()
        if values is not None:
            parts.append("one of " + ", ".join(values))
        if self.pattern is not None:
            parts.append(self.allowed or self.pattern)
        rng = self.range_text()
        if rng:
            parts.append(rng)
        if self.nonempty:
            parts.append("not empty")
        return "; ".join(parts)

    def problems(self, value: Any) -> list[str]:
        """What is wrong with an already type-checked ``value`` (empty: nothing)."""
        if value is None:
            return []
        if isinstance(value, list):
            return [f"item {i} must not be empty" for i, v in enumerate(value)
                    if self.nonempty and isinstance(v, str) and not v.strip()]
        out = []
        values = self.choice_values()
        if values is not None and value not in values:
            close = difflib.get_close_matches(str(value), values, n=1)
            what = f"not {self.kind} (one of {', '.join(values)})" if self.kind else f"not one of {', '.join(values)}"
            out.append(what + (f"; did you mean {close[0]}?" if close else ""))
        if self.pattern is not None and not (isinstance(value, str) and re.fullmatch(self.pattern, value)):
            out.append(f"expected {self.allowed or self.pattern}")
        if self.nonempty and isinstance(value, str) and not value.strip():
            out.append("must not be empty")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds = ((self.ge, lambda v, b: v >= b), (self.gt, lambda v, b: v > b),
                      (self.le, lambda v, b: v <= b), (self.lt, lambda v, b: v < b))
            if any(b is not None and not ok(value, b) for b, ok in bounds):
                out.append(f"must be {'in ' if ', ' in (self.range_text() or '') else ''}{self.range_text()}")
        return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
        **rule: Any) -> Any:
    """A dataclass field whose metadata holds its :class:`Rule` (``help`` and the rule's checks)."""
    meta = {"rule": Rule(help=help, **rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A sub-section field (a dataclass built from its defaults; its docstring says what it is)."""
    return field(default_factory=cls)


UNIT = {"ge": 0.0, "le": 1.0}  # a probability or fraction in [0, 1]
DROPOUT = {"ge": 0.0, "lt": 1.0}
POSITIVE = {"ge": 1}


# ----------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------


@dataclass
class UnlabeledSource:
    """One source of unlabeled text: ``text`` files, or a labeled format whose labels are ignored."""

    path: str = opt("", "File or directory to read (``${CEMR_DATA_DIR}`` and ``~`` expanded)", nonempty=True)
    format: str = opt("text", "``text``: .txt/.jsonl/.json/.csv/.tsv/extensionless files; a labeled "
                      "format: its documents' text, labels ignored", choices=CORPUS_FORMATS, kind="a corpus format")
    column: str | None = opt(None, "``text`` format: the text's csv/tsv column (a header name, or a 0-based "
                             "index in digits for files without a header) or JSON field (default text, "
                             "else originalText)")
    per_line: bool = opt(True, "``text`` format, .txt files: one document per line (true) or per file (false)")
    limit: int | None = opt(None, "Read at most this many documents from this source (null: all)", ge=0)


@dataclass
class DataConfig:
    """Where the labeled and unlabeled data come from and how they are split.

    ``format: demo`` uses the built-in synthetic corpus (no files needed).
    """

    format: str = opt("demo", "Format of data.train/dev/test; ``demo``: the built-in synthetic corpus "
                      "(no files)", choices=_labeled_formats,
                      kind="a labeled format")
    train: str | None = opt(None, "Labeled training file or directory (required unless format is demo)")
    dev: str | None = opt(None, "Labeled dev file or directory; null: dev is carved from train by "
                          "record (data.dev_fraction)")
    test: str | None = opt(None, "Labeled test file or directory; null: carved from train when "
                           "data.test_fraction > 0, else no test set")
    dev_fraction: float = opt(0.1, "Share of the training records carved out as dev when data.dev is "
                              "null", ge=0.0, lt=1.0)
    test_fraction: float = opt(0.0, "Share of the training records carved out as test when data.test "
                               "is null", ge=0.0, lt=1.0)
    split_seed: int = opt(13, "Seed of the record-grouped dev/test split and of the labeled_fraction sample")
    unlabeled: list[UnlabeledSource] = opt(help="Sources of the unlabeled pool (pretraining and "
                                           "pseudo-labeling), read in order", factory=list)
    max_unlabeled: int | None = opt(None, "Keep at most this many pool documents from data.unlabeled "
                                    "(reading stops there; null: no cap)", ge=0)
    labeled_fraction: float = opt(1.0, "Low-resource protocol: keep this share of the gold training "
                                  "records (seeded by record)", gt=0.0, le=1.0)
    overlap_policy: str = opt("keep_longest", "What to do with overlapping or nested gold spans",
                              choices=OVERLAP_POLICIES, kind="an overlap policy")
    max_sentence_len: int = opt(256, "Documents are split into sentences of at most this many chars", ge=8)
    dedup_threshold: float = opt(0.9, "Jaccard similarity (char 5-grams, verified exactly) from which a pool "
                                 "document is a near duplicate of a gold or earlier pool document and left "
                                 "out (counted in the prepare report)", gt=0.0, le=1.0)
    types: list[str] | None = opt(None, "Entity types to declare/keep (spans of other types are "
                                  "rejected); null: the types found in the data", nonempty=True)
    max_rejected: float = opt(0.01, "A run stops when more than this share of a labeled source's "
                              "records is rejected (all rejected always stops it)", **UNIT)
    strict: bool = opt(False, "Any rejected labeled record stops the run")
    demo_documents: int = opt(240, "format demo: labeled records generated", **POSITIVE)
    demo_unlabeled: int = opt(2000, "format demo: unlabeled texts generated (added to the pool)", ge=0)
    demo_seed: int = opt(7, "format demo: seed of the generated corpus")


@dataclass
class LexiconSource:
    """A term list: ``type`` for a one-type list, ``type_map`` for typed lists (code -> type)."""

    path: str = opt("", "The term list file (``${CEMR_DATA_DIR}`` and ``~`` expanded)", nonempty=True)
    format: str = opt("lines", "``lines``: a term per line (optional TAB + code); ``csv``: term,CODE rows",
                      choices=LEXICON_FORMATS, kind="a lexicon list format")
    type: str | None = opt(None, "Entity type of every term (or of codes type_map does not map); an "
                           "untyped list with no type_map is skipped and reported")
    type_map: dict[str, str] = opt(help="Code -> entity type for typed lists; a code mapping to "
                                   "nothing rejects the term", factory=dict)


@dataclass
class LexiconConfig:
    """The dictionary feature's term lists: a preset, extra sources and the training mentions."""

    preset: str | None = opt(None, "A named set of the public term lists under ${CEMR_DATA_DIR}/lexicons "
                             "mapped to a corpus's types; null: only lexicon.sources", choices=LEXICON_PRESETS,
                             kind="a lexicon preset")
    sources: list[LexiconSource] = opt(help="Term lists added after the preset's", factory=list)
    include_train_mentions: bool = opt(True, "Add the gold training mentions to the lexicon")
    min_length: int = opt(2, "Terms shorter than this many chars are dropped", **POSITIVE)
    max_length: int = opt(30, "Terms longer than this many chars are dropped", **POSITIVE)
    stopwords: list[str] = opt(help="Terms never used (added to the preset's stop-word files)",
                               factory=list, nonempty=True)
    folds: int = opt(5, "Out-of-fold lexicon: a training sentence is matched against a lexicon built "
                     "without its fold's mentions (k folds); 0: off", ge=0)


@dataclass
class Word2VecConfig:
    """gensim word2vec char vectors, trained on the pretraining text."""

    dim: int = opt(128, "Vector size (initialises model.char_dim / model.bilm.embedding_dim when equal)",
                   **POSITIVE)
    window: int = opt(5, "Context window (chars each side)", **POSITIVE)
    min_count: int = opt(1, "Chars seen fewer times get no vector", **POSITIVE)
    epochs: int = opt(5, "Training epochs over the text", **POSITIVE)
    sg: bool = opt(False, "Skip-gram (true) or CBOW (false)")


@dataclass
class BiLMConfig:
    """The forward + backward char LSTM language models (a frozen feature of the tagger)."""

    enabled: bool = opt(True, "Pretrain the BiLM and feed its states to the tagger")
    embedding_dim: int = opt(128, "Char embedding size (initialised from word2vec when model.word2vec.dim "
                             "equals it)", **POSITIVE)
    hidden_dim: int = opt(128, "LSTM hidden size per direction", **POSITIVE)
    layers: int = opt(1, "LSTM layers", **POSITIVE)
    dropout: float = opt(0.2, "Dropout in the language models while pretraining", **DROPOUT)
    epochs: int = opt(3, "Pretraining epochs", **POSITIVE)
    batch_size: int = opt(32, "Pretraining batch size (pieces)", **POSITIVE)
    lr: float = opt(2e-3, "Adam learning rate", gt=0.0)
    max_len: int = opt(128, "Texts are cut into pieces of at most this many chars", **POSITIVE)
    max_sentences: int | None = opt(50000, "Pretrain on at most this many pieces (a seeded sample; null: "
                                    "all)", **POSITIVE)


@dataclass
class BertConfig:
    """A small char BERT, pretrained here by masked-language modeling unless a checkpoint is given."""

    enabled: bool = opt(True, "Use BERT states as a tagger feature")
    checkpoint: str | None = opt(None, "Local save_pretrained BERT directory: MLM pretraining continues from "
                                 "it (pretrain_epochs 0: used as it is); its sizes replace the ones below")
    freeze: bool = opt(True, "Keep BERT frozen while training the tagger (false: fine-tune it)")
    hidden_size: int = opt(128, "Hidden size of the pretrained BERT (a multiple of heads)", **POSITIVE)
    layers: int = opt(2, "Transformer layers", **POSITIVE)
    heads: int = opt(2, "Attention heads", **POSITIVE)
    intermediate_size: int = opt(256, "Feed-forward size", **POSITIVE)
    max_position: int = opt(256, "Position embeddings; a window holds at most max_position - 2 chars", ge=3)
    window: int = opt(256, "Longer texts are encoded in windows of this many chars (capped at "
                      "max_position - 2)", **POSITIVE)
    stride: int = opt(128, "Chars between window starts (<= window); each char uses the window where it "
                      "is most central", **POSITIVE)
    pretrain_epochs: int = opt(1, "MLM pretraining epochs (0 only with a checkpoint: used as it is)", ge=0)
    pretrain_batch_size: int = opt(32, "MLM batch size (pieces)", **POSITIVE)
    pretrain_lr: float = opt(5e-4, "AdamW learning rate of MLM pretraining", gt=0.0)
    pretrain_max_sentences: int | None = opt(20000, "Pretrain on at most this many pieces (a seeded sample; "
                                             "null: all)", **POSITIVE)
    mask_prob: float = opt(0.15, "Share of chars chosen for masking (at least one per piece)", gt=0.0, le=1.0)
    autocast: str = opt("off", "BERT's forward passes (features while training, dev, prediction, pseudo-"
                        "labeling) under torch.autocast: bf16 (GPU; CPU too), fp16 (GPU); off: float32. "
                        "Recorded in the model directory", choices=BERT_AUTOCAST, kind="an autocast setting")
    window_batch_size: int = opt(64, "Windows (of up to model.bert.window chars) per BERT forward pass: "
                                 "bounds BERT's activation memory on a GPU (recorded in the model directory)",
                                 **POSITIVE)


@dataclass
class DictionaryConfig:
    """The lexicon-match feature (BMM tags per char, embedded)."""

    enabled: bool = opt(True, "Match the lexicon and feed the tags to the tagger")
    dim: int = opt(50, "Embedding size of the dictionary tags", **POSITIVE)
    dropout: float = opt(0.1, "Feature dropout: in training, this share of chars' dictionary tags is "
                         "replaced by O", **DROPOUT)
    match_sets: bool = opt(False, "Also feed each char's match set: every lexicon term covering it (nested "
                           "and overlapping ones too, not only BMM's), as begin/middle/end/single x type, "
                           "projected to dim and added (soft-lexicon style, cemr.features.dictionary)")


@dataclass
class BigramConfig:
    """Char bigram embeddings: word2vec on the bigrams of the pretraining text (cemr.features.bigram);
    each char gets the vectors of the bigram ending at it and the one starting at it."""

    enabled: bool = opt(False, "Pretrain bigram vectors and feed them to the tagger (2 * dim per char)")
    dim: int = opt(50, "Vector size of one bigram", **POSITIVE)
    window: int = opt(5, "Context window (bigrams each side)", **POSITIVE)
    min_count: int = opt(2, "Bigrams seen fewer times share the unknown (zero) vector", **POSITIVE)
    epochs: int = opt(5, "Training epochs over the text", **POSITIVE)
    sg: bool = opt(False, "Skip-gram (true) or CBOW (false)")
    freeze: bool = opt(True, "Keep the vectors as pretrained (false: fine-tune them with the tagger)")


@dataclass
class ModelConfig:
    """The BiGRU-attention-CRF tagger and its pretrained features."""

    char_dim: int = opt(100, "Trainable char embedding of the tagger (initialised from word2vec when "
                        "model.word2vec.dim equals it)", **POSITIVE)
    gru_hidden: int = opt(128, "BiGRU hidden size per direction (its output is 2 * gru_hidden)", **POSITIVE)
    attention_heads: int = opt(4, "Self-attention heads over the BiGRU output (must divide 2 * gru_hidden)",
                               **POSITIVE)
    dropout: float = opt(0.3, "Dropout of the tagger", **DROPOUT)
    word2vec: Word2VecConfig = section(Word2VecConfig)
    bilm: BiLMConfig = section(BiLMConfig)
    bert: BertConfig = section(BertConfig)
    bigram: BigramConfig = section(BigramConfig)
    dictionary: DictionaryConfig = section(DictionaryConfig)
    feature_cache_mb: float = opt(1024.0, "MiB of frozen BiLM/BERT outputs cached per featurizer while "
                                  "training (0: off); a loaded Predictor keeps none", ge=0.0)


@dataclass
class TrainConfig:
    """Supervised training of the tagger (every self-training round too)."""

    epochs: int = opt(20, "Training epochs (at most; see patience)", **POSITIVE)
    batch_size: int = opt(32, "Sentences per batch (batches of similar lengths)", **POSITIVE)
    lr: float = opt(2e-3, "Adam learning rate of epoch 1", gt=0.0)
    weight_decay: float = opt(0.0, "Adam weight decay", ge=0.0)
    lr_decay: float = opt(1.0, "Learning rate of epoch e: lr * lr_decay ** (e - 1); 1: constant",
                          gt=0.0, le=1.0)
    clip_norm: float = opt(5.0, "Gradient norm clipping; 0: off", ge=0.0)
    patience: int = opt(4, "Stop after this many epochs without a dev F1 gain; 0: never early", ge=0)
    seed: int = opt(42, "Seed of initialisation, dropout, batch order and (unless train.pretrain_seed) pretraining")
    pretrain_seed: int | None = opt(None, "Seed of pretraining (word2vec, BiLM, BERT); null: train.seed. Set it "
                                    "to share one pretrain/ across runs that differ in train.seed (seed studies)")
    device: str = opt("auto", "Torch device; auto: cuda when available, else cpu", pattern=DEVICE_PATTERN,
                      allowed="auto, cpu, cuda or cuda:N")
    amp: bool = opt(False, "Mixed precision training: the forward pass under torch.autocast of "
                    "train.amp_dtype (float16 on CPU: ignored, with a warning)")
    amp_dtype: str = opt("float16", "train.amp's dtype: float16 (CUDA only, with a gradient scaler) or "
                         "bfloat16 (CUDA, and CPU; no scaler)", choices=AMP_DTYPES, kind="an amp dtype")
    bert_lr: float | None = opt(3e-5, "Learning rate of a fine-tuned BERT (model.bert.freeze false) at its "
                                "top layer; null: train.lr", gt=0.0)
    bert_warmup: float = opt(0.1, "Fine-tuned BERT: its learning rate rises linearly from 0 over this "
                             "share of the training steps of a call (then follows train.lr_decay)", **UNIT)
    bert_layer_decay: float = opt(1.0, "Fine-tuned BERT: layer-wise learning-rate decay; layer i of L "
                                  "gets bert_lr * decay ** (L - i), the embeddings decay ** L; 1: none",
                                  gt=0.0, le=1.0)
    max_train_sentences: int | None = opt(None, "Train on at most this many sentences (a seeded sample; "
                                          "null: all)", **POSITIVE)
    eval_batch_size: int = opt(64, "Sentences per batch when evaluating on dev", **POSITIVE)


@dataclass
class SelfTrainConfig:
    """The bootstrap loop: pseudo-label the pool, keep the confident part, retrain."""

    threshold: float = opt(0.7, "Confidence a pseudo-label must reach to be kept", **UNIT)
    target_precision: float | None = opt(None, "Per-type thresholds fitted on dev each round: an entity type's "
                                         "threshold is the lowest confidence at which the teacher's dev "
                                         "predictions of that type reach this precision (a type with fewer than "
                                         "20 dev predictions, or never reaching it, keeps threshold); entity or "
                                         "partial selection only; null: threshold for every type", gt=0.0, le=1.0)
    confidence: str = opt("entity_min_marginal", "How confidence is measured (see cemr.selection and cemr.confidence)",
                          choices=CONFIDENCE_METHODS, kind="a confidence method")
    selection: str = opt("sentence", "What is kept: whole sentences, confident entities, or entities "
                         "with unsure chars trained as partial labels (see cemr.selection)",
                         choices=SELECTION_MODES, kind="a selection mode")
    mode: str = opt("rederive", "rederive: a round trains on gold + its own pseudo-labels; accumulate: "
                    "every sentence once kept stays", choices=BOOKKEEPING_MODES, kind="a bookkeeping mode")
    max_rounds: int = opt(3, "Self-training rounds after round 0 (gold only); 0: gold only", ge=0)
    patience: int = opt(1, "Stop after this many rounds without a dev F1 gain; 0: never early", ge=0)
    max_pseudo_per_round: int | None = opt(None, "Keep at most this many pseudo-labeled sentences per "
                                           "round (the most confident; null: no cap)", ge=0)
    cap_keeps_empty_share: bool = opt(False, "Under max_pseudo_per_round, sentences without a kept entity take "
                                      "at most their share among the kept candidates (a confidence ranking "
                                      "puts them first); false: the most confident whatever they hold")
    class_balance: bool = opt(False, "Cap pseudo-labeled entities per type to the gold type shares")
    pseudo_weight: float = opt(1.0, "Loss weight of a pseudo-labeled sentence (gold: 1)", gt=0.0)
    warm_start: bool = opt(False, "Round r > 0 starts from the weights of the model that pseudo-labeled it "
                           "(the lr schedule starts over); false: every round starts from train.seed's init")


@dataclass
class SweepConfig:
    """The confidence-threshold sweep (``jobs.sweep``): thresholds start, start + step, ... <= stop."""

    start: float = opt(0.1, "First threshold", **UNIT)
    stop: float = opt(1.0, "Last threshold (inclusive, >= start)", **UNIT)
    step: float = opt(0.1, "Threshold step", gt=0.0)


@dataclass
class ClusterConfig:
    """Ray: the cluster, the training workers and the pseudo-labeling actors (``jobs.*`` only)."""

    address: str | None = opt(None, "Ray cluster to join; null: RAY_ADDRESS if set, else start a local "
                              "instance", nonempty=True)
    num_cpus: int | None = opt(None, "CPUs of a local instance (null: Ray's default, all)", **POSITIVE)
    num_workers: int = opt(1, "Ray Train workers (DDP) per training round", **POSITIVE)
    use_gpu: bool = opt(False, "A GPU per training worker")
    cpus_per_worker: float = opt(1.0, "CPUs per training worker (and of the prepare/pretrain task)", gt=0.0)
    actors: int = opt(1, "Pseudo-labeling actors (cluster.labeler_pool)", **POSITIVE)
    reuse_actors: bool = opt(True, "Keep the pseudo-labeling actors between rounds (their CPUs/GPUs and memory "
                             "stay reserved; a training round that would not fit beside them stops them "
                             "first); false: start them for every pass")
    actor_num_cpus: float = opt(0.5, "CPUs per pseudo-labeling actor", ge=0.0)
    actor_num_gpus: float = opt(0.0, "GPUs per pseudo-labeling actor", ge=0.0)
    actor_threads: int | None = opt(None, "Torch threads per actor (null: Ray's OMP_NUM_THREADS, about "
                                    "actor_num_cpus)", **POSITIVE)
    actor_precision: str = opt("fp32", "Precision of the pseudo-labeling / batch-prediction actors' predictor "
                               "(cemr.predictor.set_precision): fp32 exact; bf16 (featurizers in bfloat16, for "
                               "CPUs with AVX-512 BF16/AMX), int8 (dynamic quantization, CPU only) and bf16-int8 "
                               "are faster but not exact and may change a few spans; evaluation stays fp32",
                               choices=PREDICTOR_PRECISIONS, kind="a predictor precision")
    # A loaded real model takes ~0.7 GiB per actor on CPU (the session-4 Yidu-S4K model: 661 MiB RSS
    # after 3,000 sentences; the 1.3-2.6 GiB seen before included the training feature cache, now off
    # in a Predictor)
    actor_memory_mb: float | None = opt(None, "Memory Ray reserves per actor, MiB (null: none); ~0.7 GiB "
                                        "per loaded model on CPU", gt=0.0)
    batch_size: int = opt(256, "Rows (sentences or documents) per pseudo-labeling / prediction batch",
                          **POSITIVE)
    rows_per_shard: int = opt(2000, "Rows per Parquet shard written", **POSITIVE)
    max_failures: int = opt(1, "Ray Train restarts of a failed training round (-1: unlimited)", ge=-1)
    checkpoint_every_steps: int = opt(0, "Optimizer steps between mid-epoch checkpoints of a Ray Train round "
                                      "(0: after every epoch only); a restarted worker resumes there", ge=0)
    gpu_wait_s: float = opt(600.0, "Seconds to wait for the GPUs asked for (use_gpu, actor_num_gpus) "
                            "before the job stops or falls back to CPU", ge=0.0)
    cpu_fallback: bool = opt(False, "Run on CPU when the GPUs cannot be had within gpu_wait_s")
    max_failed_fraction: float = opt(0.01, "A pseudo-labeling round stops the run when more than this "
                                     "share of its rows failed", **UNIT)


@dataclass
class TrackingConfig:
    """MLflow tracking."""

    tracking_uri: str | None = opt(None, "MLflow tracking URI (env MLFLOW_TRACKING_URI wins); null: "
                                   "sqlite:///<run_dir>/../mlflow.db")
    experiment: str = opt("cemr", "MLflow experiment name", nonempty=True)
    run_name: str | None = opt(None, "MLflow run name (null: the run directory's name)")
    log_samples: bool = opt(False, "Log examples of raw text (patient data: never unless asked)")
    register_model: str | None = opt("cemr-tagger", "Register the best model under this name (null: "
                                     "not registered)", nonempty=True)


@dataclass
class Config:
    """The whole run."""

    name: str = opt("demo", "Experiment name (an MLflow tag)", nonempty=True)
    run_dir: str = opt("runs/demo", "Directory of the run's outputs (the default --out)", nonempty=True)
    data: DataConfig = section(DataConfig)
    lexicon: LexiconConfig = section(LexiconConfig)
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)
    selftrain: SelfTrainConfig = section(SelfTrainConfig)
    sweep: SweepConfig = section(SweepConfig)
    cluster: ClusterConfig = section(ClusterConfig)
    tracking: TrackingConfig = section(TrackingConfig)


@dataclass(frozen=True)
class CrossRule:
    """A rule between keys: ``check(cfg)`` returns what is wrong (None: fine). Skipped when one of
    ``keys`` already has a problem of its own."""

    keys: tuple[str, ...]
    doc: str
    check: Callable[[Config], str | None]


def _when(ok: bool, message: str) -> str | None:
    return None if ok else message


CROSS_RULES: tuple[CrossRule, ...] = (
    CrossRule(("data.dev_fraction", "data.test_fraction"), "data.dev_fraction + data.test_fraction < 1",
              lambda c: _when(c.data.dev_fraction + c.data.test_fraction < 1.0,
                              f"data.dev_fraction + data.test_fraction = "
                              f"{c.data.dev_fraction + c.data.test_fraction:g} leaves no training records; "
                              "must be < 1")),
    CrossRule(("data.format", "data.train"), "data.train is required unless data.format is demo",
              lambda c: _when(c.data.format == "demo" or bool(c.data.train),
                              f"data.train is required for data.format={c.data.format}")),
    CrossRule(("data.format", "data.train", "data.dev", "data.test"),
              "data.format demo takes no data.train, data.dev or data.test",
              lambda c: _when(c.data.format != "demo" or not (c.data.train or c.data.dev or c.data.test),
                              "data.format=demo uses the built-in corpus: leave data.train, data.dev and "
                              "data.test unset (or set data.format to the files' format)")),
    CrossRule(("lexicon.min_length", "lexicon.max_length"), "lexicon.min_length <= lexicon.max_length",
              lambda c: _when(c.lexicon.min_length <= c.lexicon.max_length,
                              f"lexicon.min_length ({c.lexicon.min_length}) must be <= lexicon.max_length "
                              f"({c.lexicon.max_length})")),
    CrossRule(("model.gru_hidden", "model.attention_heads"),
              "model.attention_heads divides 2 * model.gru_hidden (cemr.tagger)",
              lambda c: _when((2 * c.model.gru_hidden) % c.model.attention_heads == 0,
                              f"model.attention_heads ({c.model.attention_heads}) must divide the BiGRU output "
                              f"size 2 * model.gru_hidden = {2 * c.model.gru_hidden}")),
    CrossRule(("model.bert.hidden_size", "model.bert.heads", "model.bert.checkpoint", "model.bert.enabled"),
              "model.bert.hidden_size is a multiple of model.bert.heads (when BERT is pretrained here)",
              lambda c: _when(not c.model.bert.enabled or c.model.bert.checkpoint is not None
                              or c.model.bert.hidden_size % c.model.bert.heads == 0,
                              f"model.bert.hidden_size ({c.model.bert.hidden_size}) must be a multiple of "
                              f"model.bert.heads ({c.model.bert.heads})")),
    CrossRule(("model.bert.pretrain_epochs", "model.bert.checkpoint", "model.bert.enabled"),
              "model.bert.pretrain_epochs >= 1 unless model.bert.checkpoint is set",
              lambda c: _when(not c.model.bert.enabled or c.model.bert.pretrain_epochs >= 1
                              or c.model.bert.checkpoint is not None,
                              "model.bert.pretrain_epochs = 0 needs model.bert.checkpoint (a BERT to use as it "
                              "is); without one BERT is pretrained here, for at least 1 epoch")),
    CrossRule(("model.bert.stride", "model.bert.window", "model.bert.enabled"),
              "model.bert.stride <= model.bert.window (cemr.features.bert.plan_windows)",
              lambda c: _when(not c.model.bert.enabled or c.model.bert.stride <= c.model.bert.window,
                              f"model.bert.stride ({c.model.bert.stride}) must be <= model.bert.window "
                              f"({c.model.bert.window})")),
    CrossRule(("selftrain.target_precision", "selftrain.selection"),
              "selftrain.target_precision needs selftrain.selection entity or partial (cemr.selection)",
              lambda c: _when(c.selftrain.target_precision is None or c.selftrain.selection != "sentence",
                              "selftrain.target_precision fits a threshold per entity type, which sentence "
                              "selection (whole sentences kept by one score) cannot use: set "
                              "selftrain.selection to entity or partial, or target_precision to null")),
    CrossRule(("sweep.start", "sweep.stop"), "sweep.start <= sweep.stop",
              lambda c: _when(c.sweep.start <= c.sweep.stop,
                              f"sweep.start ({c.sweep.start:g}) must be <= sweep.stop ({c.sweep.stop:g})")),
)


# ----------------------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the dotted key, what is wrong, where it was set (``file:line:col`` or
    ``override KEY=VALUE``; '' for a default) and the value."""

    key: str
    message: str
    where: str = ""
    value: str | None = None  # the offending value (repr), when the message is about it

    def __str__(self) -> str:
        value = f" = {self.value}" if self.value is not None else ""
        what = self.message if self.message.startswith(self.key) else f"{self.key}{value}: {self.message}"
        return f"{self.where + ': ' if self.where else ''}{what}"


def _position(problem: Problem) -> tuple:
    """Sort key: file problems by line and column, then overrides, then the rest (stable)."""
    m = re.search(r":(\d+):(\d+)$", problem.where)
    if m:
        return (0, int(m.group(1)), int(m.group(2)))
    return (1,) if problem.where.startswith("override") else (2,)


def _raise_if(problems: list[Problem], path: str | os.PathLike | None) -> None:
    if not problems:
        return
    problems = sorted(problems, key=_position)
    head = f"{path}: " if path is not None else ""
    if len(problems) == 1:
        raise ConfigError(f"{head}invalid configuration: {problems[0]}", problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    raise ConfigError(f"{head}invalid configuration, {len(problems)} problems:\n{lines}", problems)


class _Marks:
    """Where each dotted key was set: the YAML file's line:column, or the override."""

    def __init__(self) -> None:
        self.at: dict[str, str] = {}

    def where(self, key: str) -> str:
        k = key
        while k:
            if k in self.at:
                return self.at[k]
            k = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", k) if ("." in k or "[" in k) else ""
        return ""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

_BAD = object()  # a value that failed its type check (reported; the default is used meanwhile)
# a number in exponent notation without a dot (1e-4, 3E5): a string to YAML 1.1, a float to YAML 1.2
_YAML11_EXPONENT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(tp: Any, value: Any, key: str, marks: _Marks, out: list[Problem]) -> Any:
    """``value`` as type ``tp`` (dataclasses built recursively), or ``_BAD`` after recording why."""

    def bad(message: str) -> Any:
        out.append(Problem(key, message, marks.where(key)))
        return _BAD

    optional, tp = _is_optional(tp)
    if value is None:
        return None if optional else bad("null is not allowed here")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            return bad(f"expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key + ".", marks, out)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            return bad(f"expected a list, got {type(value).__name__} {value!r}")
        items = [_coerce(item_tp, v, f"{key}[{i}]", marks, out) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            return bad(f"expected a mapping, got {type(value).__name__} {value!r}")
        pairs = [(_coerce(k_tp, k, key, marks, out), _coerce(v_tp, v, f"{key}.{k}", marks, out))
                 for k, v in value.items()]
        return _BAD if any(_BAD in p for p in pairs) else dict(pairs)
    if tp is bool:
        return value if isinstance(value, bool) else bad(f"expected true/false, got {value!r}")
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else bad(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            return float(value)  # 3e-5: YAML 1.1 (PyYAML) reads it as a string, everyone means the number
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else bad(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) else bad(f"expected a string, got {value!r}")
    return value


def _suggestion(name: str, prefix: str, names: Sequence[str]) -> str:
    """`` (did you mean train.epochs?)`` from the section's keys, else a same-named key elsewhere;
    '' when nothing is close."""
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f" (did you mean {prefix}{close[0]}?)"
    elsewhere = [k for k in all_keys() if k.rsplit(".", 1)[-1] == name]
    return f" (did you mean {' or '.join(elsewhere)}?)" if elsewhere else ""


def _build(cls: type, data: dict[str, Any], prefix: str, marks: _Marks, out: list[Problem]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    section_name = prefix.rstrip(".") or "the top level"
    for u in sorted((str(k) for k in data if k not in names)):
        hint = _suggestion(u, prefix, names) or f"; keys of {section_name}: {', '.join(names)}"
        out.append(Problem(prefix + u, f"unknown key{hint}", marks.where(prefix + u)))
    kwargs = {}
    for k in names:
        if k in data:
            value = _coerce(hints[k], data[k], prefix + k, marks, out)
            if value is not _BAD:
                kwargs[k] = value
    return cls(**kwargs)


def _rule_problems(obj: Any, prefix: str, bad_keys: set[str], marks: _Marks, out: list[Problem]) -> None:
    """Check every field rule of the tree ``obj`` (keys in ``bad_keys`` already failed their type)."""
    for f in dataclasses.fields(obj):
        key = prefix + f.name
        if key in bad_keys:
            continue
        value = getattr(obj, f.name)
        rule: Rule | None = f.metadata.get("rule")
        if dataclasses.is_dataclass(value):
            _rule_problems(value, key + ".", bad_keys, marks, out)
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _rule_problems(item, f"{key}[{i}].", bad_keys, marks, out)
            continue
        if rule is not None:
            for msg in rule.problems(value):
                out.append(Problem(key, msg, marks.where(key), repr(value)))


def check(cfg: Config, marks: _Marks | None = None, bad_keys: set[str] | None = None) -> list[Problem]:
    """Every field-rule and cross-rule problem of ``cfg`` (empty: valid)."""
    marks = marks or _Marks()
    bad_keys = bad_keys or set()
    out: list[Problem] = []
    _rule_problems(cfg, "", bad_keys, marks, out)
    failed = bad_keys | {p.key for p in out}
    for rule in CROSS_RULES:
        if failed & set(rule.keys):
            continue
        msg = rule.check(cfg)
        if msg:
            # where one of its keys was set, else where the nearest section of one was
            where = next((marks.at[k] for k in rule.keys if k in marks.at), "") or next(
                (w for w in map(marks.where, rule.keys) if w), "")
            out.append(Problem(rule.keys[0], msg, where))
    return out


def validate(cfg: Config) -> Config:
    """``cfg`` when every rule holds, else a :class:`ConfigError` listing every problem."""
    _raise_if(check(cfg), None)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.epochs=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from None


def _yaml_error(path: str | os.PathLike, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError) and (exc.problem_mark or exc.context_mark):
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        return ConfigError(f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {exc.problem}{context}")
    return ConfigError(f"{path}: invalid YAML: {exc}")


def _record_marks(node: yaml.Node, prefix: str, path: str, marks: _Marks, out: list[Problem]) -> None:
    """Record the line:column of every key under ``node``; duplicate keys are problems."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k_node, v_node in node.value:
            key = prefix + str(k_node.value)
            where = f"{path}:{k_node.start_mark.line + 1}:{k_node.start_mark.column + 1}"
            if key in seen:
                out.append(Problem(key, "duplicate key (the last one would win)", where))
            seen.add(key)
            marks.at[key] = where
            _record_marks(v_node, key + ".", path, marks, out)
    elif isinstance(node, yaml.SequenceNode):
        base = prefix.rstrip(".")
        for i, item in enumerate(node.value):
            key = f"{base}[{i}]"
            marks.at[key] = f"{path}:{item.start_mark.line + 1}:{item.start_mark.column + 1}"
            _record_marks(item, key + ".", path, marks, out)


def _read_yaml(path: str | os.PathLike, marks: _Marks, out: list[Problem]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if loaded is None:
        raise ConfigError(f"{path}: the config file is empty; to run the embedded demo pass no --config")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}:1:1: the top level must be a mapping of keys (name, data, train, ...), "
                          f"got a {type(loaded).__name__}")
    _record_marks(node, "", str(path), marks, out)
    return loaded


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the embedded default when ``path`` is None), apply the overrides and
    check everything; one :class:`ConfigError` lists every problem found."""
    marks = _Marks()
    problems: list[Problem] = []
    data: dict[str, Any] = _read_yaml(path, marks, problems) if path is not None else {}
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_dotted(data, key, value)
        for k in [k for k in marks.at if k == key or k.startswith(key + ".") or k.startswith(key + "[")]:
            del marks.at[k]
        marks.at[key] = f"override {ov.strip()}"
    before = len(problems)
    cfg = _build(Config, data, "", marks, problems)
    bad_keys = {p.key for p in problems[before:]}
    problems += check(cfg, marks, bad_keys)
    _raise_if(problems, path)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> scalar value, for logging every config value as an MLflow param."""
    out: dict[str, Any] = {}
    items = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    for k, v in items.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------------------------
# The reference
# ----------------------------------------------------------------------------------------------


def _item_class(tp: Any) -> type | None:
    """The dataclass of a ``list[SomeDataclass]`` field, else None."""
    _, tp = _is_optional(tp)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return item if dataclasses.is_dataclass(item) else None
    return None


def sections(cls: type = Config, prefix: str = "") -> list[tuple[str, type]]:
    """``(dotted prefix, dataclass)`` of every section, depth first (list items as ``key[]``)."""
    out = [(prefix, cls)]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += sections(tp, f"{prefix}{f.name}.")
        elif _item_class(tp) is not None:
            out += sections(_item_class(tp), f"{prefix}{f.name}[].")
    return out


def keys_of(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` of the leaf keys of one section (sub-sections left out)."""
    hints = typing.get_type_hints(cls)
    return [(prefix + f.name, f, hints[f.name]) for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(hints[f.name])]


def all_keys() -> list[str]:
    """Every dotted key of the tree (list items as ``key[].sub``)."""
    return [k for prefix, cls in sections() for k, _, _ in keys_of(cls, prefix)]


def _type_text(tp: Any) -> str:
    optional, tp = _is_optional(tp)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        text = "list of mappings" if dataclasses.is_dataclass(item) else f"list of {_type_text(item)}"
    elif origin is dict:
        k, v = typing.get_args(tp)
        text = f"mapping {_type_text(k)} -> {_type_text(v)}"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text} or null" if optional else text


def _default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """``docs/config.md``: every key with its type, default, allowed values and meaning, and the
    rules between keys, generated from the tree."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `cemr/config.py` by `python -m cemr.config --reference > docs/config.md`; "
        "a test fails when this file is not current. Every problem of a config (unknown keys, "
        "types, allowed values, ranges, the rules between keys below) is reported when it loads, "
        "before any stage runs. Paths may use `${CEMR_DATA_DIR}` and `~`. Override any key with "
        "`key=value` (YAML value), e.g. `train.epochs=3`.",
        "",
    ]
    for prefix, cls in sections():
        rows = keys_of(cls, prefix)
        if not rows:
            continue
        title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
        lines += [f"## {title}", "", (cls.__doc__ or "").strip().splitlines()[0].replace("``", "`"), "",
                  "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key, f, tp in rows:
            rule: Rule = f.metadata["rule"]
            item = _item_class(tp)
            allowed = rule.allowed_text()
            if typing.get_origin(_is_optional(tp)[1]) is list:
                allowed = allowed.replace("not empty", "items not empty")
            allowed = allowed or (f"see `{key}[]`" if item is not None else "any")
            lines.append(f"| `{key}` | {_cell(_type_text(tp))} | `{_cell(_default_text(f))}` | "
                         f"{_cell(allowed)} | {_cell(rule.help.replace('``', '`'))} |")
        lines.append("")
    lines += ["## Rules between keys", ""]
    lines += [f"- {r.doc}" for r in CROSS_RULES]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cemr.config", description="cemr configuration tools")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--reference", action="store_true", help="print docs/config.md")
    group.add_argument("--check", metavar="YAML", help="load and check a config (overrides after it)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    # the canonical module, not __main__: cemr.lexicon & co. import cemr.config
    from cemr import config

    if args.reference:
        sys.stdout.write(config.config_reference())
        return 0
    try:
        config.load_config(args.check, args.overrides)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.check}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
