"""One typed configuration tree, loaded from YAML.

Every section is a dataclass; the loader refuses unknown keys (naming the dotted key and the file),
checks types, and applies ``key=value`` overrides (``train.epochs=3``, values parsed as YAML).
Paths may use ``${CEMR_DATA_DIR}`` (default ``../shared/data``) and other environment variables.
Builder functions elsewhere turn sections into flat constructor arguments: model code never
receives a config object it does not need.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DATA_DIR = "../shared/data"


class ConfigError(ValueError):
    """A configuration problem, naming the file (when known) and the dotted key."""


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
# The tree
# ----------------------------------------------------------------------------------------------


@dataclass
class UnlabeledSource:
    """One source of unlabeled text.

    ``format``: ``text`` (files or directories of .txt/.jsonl/.csv/.tsv/extensionless files) or
    one of the labeled formats (its labels are then ignored).
    """

    path: str = ""
    format: str = "text"
    column: str | None = None  # column name (csv/tsv with header) or JSON field for .jsonl
    per_line: bool = True  # .txt: one document per line (True) or per file (False)
    limit: int | None = None  # read at most this many documents from this source


@dataclass
class DataConfig:
    """Where the labeled and unlabeled data come from and how they are split.

    ``format: demo`` uses the built-in synthetic corpus (no files needed).
    """

    format: str = "demo"
    train: str | None = None
    dev: str | None = None  # when None, dev is carved from train by document (dev_fraction)
    test: str | None = None  # when None and test_fraction > 0, test is carved from train too
    dev_fraction: float = 0.1
    test_fraction: float = 0.0
    split_seed: int = 13
    unlabeled: list[UnlabeledSource] = field(default_factory=list)
    max_unlabeled: int | None = None
    labeled_fraction: float = 1.0  # low-resource protocol: keep this part of gold train
    overlap_policy: str = "keep_longest"  # keep_longest | keep_first | error
    max_sentence_len: int = 256
    types: list[str] | None = None  # restrict/declare entity types; others are rejected
    # rejection policy for labeled data (train/dev/test): a run stops when more than this fraction of
    # a source's records is rejected (all rejected is always an error); strict: any rejection stops it
    max_rejected: float = 0.01
    strict: bool = False
    demo_documents: int = 240
    demo_unlabeled: int = 2000
    demo_seed: int = 7


@dataclass
class LexiconSource:
    """A term list: ``type`` for a one-type list, ``type_map`` for typed lists (code -> type)."""

    path: str = ""
    format: str = "lines"  # lines (term per line, optional TAB+extra) | csv (term,CODE)
    type: str | None = None
    type_map: dict[str, str] = field(default_factory=dict)


@dataclass
class LexiconConfig:
    # preset: a named set of the public term lists under ${CEMR_DATA_DIR}/lexicons with their type
    # codes mapped to a corpus's entity types ("ccks2017", "yidu"); None: only ``sources``.
    preset: str | None = None
    sources: list[LexiconSource] = field(default_factory=list)
    include_train_mentions: bool = True
    min_length: int = 2
    max_length: int = 30
    stopwords: list[str] = field(default_factory=list)
    # out-of-fold: a training sentence is matched against a lexicon built without its own
    # document's mentions (k folds), so the tagger does not learn to trust the feature blindly.
    folds: int = 5


@dataclass
class Word2VecConfig:
    dim: int = 128
    window: int = 5
    min_count: int = 1
    epochs: int = 5
    sg: bool = False


@dataclass
class BiLMConfig:
    enabled: bool = True
    embedding_dim: int = 128
    hidden_dim: int = 128
    layers: int = 1
    dropout: float = 0.2
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-3
    max_len: int = 128
    max_sentences: int | None = 50000


@dataclass
class BertConfig:
    enabled: bool = True
    checkpoint: str | None = None  # local directory; None -> pretrain a small one here (MLM)
    freeze: bool = True
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    intermediate_size: int = 256
    max_position: int = 256
    window: int = 256  # windowing of longer inputs (chars), with stride below
    stride: int = 128
    pretrain_epochs: int = 1
    pretrain_batch_size: int = 32
    pretrain_lr: float = 5e-4
    pretrain_max_sentences: int | None = 20000
    mask_prob: float = 0.15


@dataclass
class DictionaryConfig:
    enabled: bool = True
    dim: int = 50
    dropout: float = 0.1  # feature dropout: random chars' dictionary tags replaced by O in training


@dataclass
class ModelConfig:
    char_dim: int = 100  # trainable char embedding of the base tagger (init from word2vec when dims agree)
    gru_hidden: int = 128
    attention_heads: int = 4
    dropout: float = 0.3
    word2vec: Word2VecConfig = field(default_factory=Word2VecConfig)
    bilm: BiLMConfig = field(default_factory=BiLMConfig)
    bert: BertConfig = field(default_factory=BertConfig)
    dictionary: DictionaryConfig = field(default_factory=DictionaryConfig)
    # MiB of frozen BiLM/BERT outputs cached per featurizer (keyed by sentence text) while training;
    # 0 = off. A loaded Predictor (evaluation, pseudo-labeling, predict) keeps none.
    feature_cache_mb: float = 1024.0


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    # learning rate of epoch e (from 1): lr * lr_decay ** (e - 1); 1.0 = constant
    lr_decay: float = 1.0
    clip_norm: float = 5.0
    patience: int = 4
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False
    max_train_sentences: int | None = None
    eval_batch_size: int = 64


@dataclass
class SelfTrainConfig:
    threshold: float = 0.7
    confidence: str = "entity_min_marginal"  # see cemr.confidence
    selection: str = "sentence"  # sentence | entity | partial (see cemr.selftrain)
    mode: str = "rederive"  # rederive | accumulate
    max_rounds: int = 3
    patience: int = 1
    max_pseudo_per_round: int | None = None
    class_balance: bool = False
    pseudo_weight: float = 1.0
    # round r > 0 starts from the weights of the model that pseudo-labeled it (the best round so far)
    # instead of train.seed's fresh init; the learning-rate schedule starts over. False: every round
    # trains from scratch
    warm_start: bool = False


@dataclass
class SweepConfig:
    start: float = 0.1
    stop: float = 1.0
    step: float = 0.1


@dataclass
class ClusterConfig:
    address: str | None = None  # None: join RAY_ADDRESS if set, else start a local instance
    num_cpus: int | None = None  # for a local instance
    num_workers: int = 1  # Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    actors: int = 1  # Ray Data pseudo-labeling actor pool size
    actor_num_cpus: float = 0.5
    actor_num_gpus: float = 0.0
    # torch threads per pseudo-labeling actor (None: Ray's OMP_NUM_THREADS, i.e. about actor_num_cpus);
    # 1 per actor when actors share small CPUs, so two actors do not fight over the same cores
    actor_threads: int | None = None
    # memory Ray reserves per pseudo-labeling actor (MiB; None: no reservation). A loaded real model
    # takes ~0.7 GiB per actor on CPU (the session-4 Yidu-S4K model: 661 MiB RSS after 3,000
    # sentences; the 1.3-2.6 GiB seen before included the training feature cache, now off in a
    # Predictor): reserving it keeps Ray from packing more actors on a node than its memory holds
    actor_memory_mb: float | None = None
    batch_size: int = 256
    rows_per_shard: int = 2000
    max_failures: int = 1
    # GPUs asked for (use_gpu / actor_num_gpus) are requested as configured, so an autoscaler can add
    # GPU nodes; a job stops when they cannot be had within gpu_wait_s seconds, unless cpu_fallback
    gpu_wait_s: float = 600.0
    cpu_fallback: bool = False
    # a pseudo-labeling round stops the run when more than this fraction of its rows failed
    max_failed_fraction: float = 0.01


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None  # default sqlite:///<run_dir>/../mlflow.db; env MLFLOW_TRACKING_URI wins
    experiment: str = "cemr"
    run_name: str | None = None
    log_samples: bool = False  # raw EMR text is patient data: never logged unless asked
    register_model: str | None = "cemr-tagger"


@dataclass
class Config:
    name: str = "demo"
    run_dir: str = "runs/demo"
    data: DataConfig = field(default_factory=DataConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}{key}: null is not allowed here")
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".", where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}{key}: expected a list, got {type(value).__name__}")
        return [_coerce(item_tp, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}{key}: expected a mapping, got {type(value).__name__}")
        return {_coerce(k_tp, k, key, where): _coerce(v_tp, v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "", where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}unknown key(s) {', '.join(prefix + u for u in unknown)}; "
            f"allowed under {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k, where) for k, v in data.items()}
    return cls(**kwargs)


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
    return key, yaml.safe_load(raw) if raw.strip() else ""


def validate(cfg: Config) -> Config:
    """Cross-field checks that the types alone cannot express."""
    d = cfg.data
    if not 0.0 <= d.dev_fraction < 1.0 or not 0.0 <= d.test_fraction < 1.0:
        raise ConfigError("data.dev_fraction and data.test_fraction must be in [0, 1)")
    if d.dev_fraction + d.test_fraction >= 1.0:
        raise ConfigError("data.dev_fraction + data.test_fraction must be < 1")
    if not 0.0 < d.labeled_fraction <= 1.0:
        raise ConfigError("data.labeled_fraction must be in (0, 1]")
    if d.overlap_policy not in ("keep_longest", "keep_first", "error"):
        raise ConfigError("data.overlap_policy must be keep_longest, keep_first or error")
    if d.max_sentence_len < 8:
        raise ConfigError("data.max_sentence_len must be >= 8")
    if d.format != "demo" and not d.train:
        raise ConfigError(f"data.train is required for data.format={d.format}")
    if cfg.lexicon.folds < 0 or cfg.lexicon.min_length < 1 or cfg.lexicon.max_length < cfg.lexicon.min_length:
        raise ConfigError("lexicon.folds must be >= 0 and 1 <= lexicon.min_length <= lexicon.max_length")
    s = cfg.selftrain
    if not 0.0 <= s.threshold <= 1.0:
        raise ConfigError("selftrain.threshold must be in [0, 1]")
    if s.selection not in ("sentence", "entity", "partial"):
        raise ConfigError("selftrain.selection must be sentence, entity or partial")
    if s.mode not in ("rederive", "accumulate"):
        raise ConfigError("selftrain.mode must be rederive or accumulate")
    if s.max_rounds < 0:
        raise ConfigError("selftrain.max_rounds must be >= 0")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be >= 1")
    if not cfg.train.lr > 0 or not 0.0 < cfg.train.lr_decay <= 1.0:
        raise ConfigError("train.lr must be > 0 and train.lr_decay in (0, 1]")
    if cfg.cluster.actors < 1 or cfg.cluster.num_workers < 1:
        raise ConfigError("cluster.actors and cluster.num_workers must be >= 1")
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the embedded default when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    where = ""
    if path is not None:
        where = f"{path}: "
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_dotted(data, key, value)
    cfg = _build(Config, data, "", where)
    return validate(cfg)


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
