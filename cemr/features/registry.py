"""Pretrained featurizers by name: the one place that knows which exist and how each is
pretrained, loaded, configured and fingerprinted.

A featurizer is an ``nn.Module`` with ``dim``, ``save(dir)``, a ``load`` classmethod and
``forward(texts) -> (B, T, dim)``; its config section is ``model.<name>`` (with ``enabled``), its
pretraining output ``RUN_DIR/pretrain/<name>/``, its directory in a model ``<name>/``, its weights
in the tagger under ``<name>.`` and its features enter the tagger in :data:`FEATURIZERS` order
(a saved model's input layer depends on that order: append new featurizers, never reorder).

Adding one: its module under ``cemr/features/``, a config section in :class:`cemr.config.ModelConfig`
and one :class:`FeaturizerKind` here. :mod:`cemr.pretrain`, :mod:`cemr.fingerprint`,
:func:`cemr.tagger.build_tagger` and :mod:`cemr.modeldir` loop over :data:`FEATURIZERS`.
The heavy modules (transformers for BERT) are imported only when a featurizer is used.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cemr.config import ModelConfig, expand_path
from cemr.features.frozen import apply_frozen

Log = Callable[[str], None]


@dataclass(frozen=True)
class PretrainInputs:
    """What a featurizer's pretraining may use: a fresh iterable of unlabeled texts per call,
    the word2vec char vectors (trained first, always), the device, the seed and a logger."""

    texts: Callable[[], Iterable[str]]
    char_vectors: Any  # cemr.features.word2vec.CharVectors
    device: Any
    seed: int
    log: Log


@dataclass(frozen=True)
class FeaturizerKind:
    """One featurizer. ``pretrain(cfg, out_dir, inputs) -> metrics`` writes ``out_dir`` (or
    nothing, when it uses a checkpoint as it is); ``load(pretrain_dir, cfg, device)`` returns the
    module from pretraining's output; ``configure(module, cfg)`` applies the config to a module
    before it joins a tagger (e.g. BERT's ``freeze``); ``inputs(cfg)``: the external paths its
    pretraining reads (fingerprinted); ``after_word2vec``: its pretraining starts from the word2vec
    vectors (their digest is part of its fingerprint); ``text_cap(cfg)``: how many pretraining
    texts it asks for (None: all; pretraining reads the largest cap, see
    :func:`cemr.fingerprint.pretraining_text_cap`)."""

    name: str
    pretrain: Callable[[ModelConfig, Path, PretrainInputs], dict[str, float]]
    load: Callable[[Path, ModelConfig, Any], nn.Module]
    configure: Callable[[nn.Module, ModelConfig], None] = lambda module, cfg: None
    inputs: Callable[[ModelConfig], dict[str, str | None]] = lambda cfg: {}
    after_word2vec: bool = False
    text_cap: Callable[[ModelConfig], int | None] = lambda cfg: None

    def section(self, cfg: ModelConfig) -> Any:
        """Its config section ``model.<name>``."""
        return getattr(cfg, self.name)

    def enabled(self, cfg: ModelConfig) -> bool:
        return bool(self.section(cfg).enabled)


# -- BiLM --------------------------------------------------------------------------------------


def _pretrain_bilm(cfg: ModelConfig, out: Path, inp: PretrainInputs) -> dict[str, float]:
    from cemr.features.bilm import train_bilm

    if cfg.bilm.embedding_dim != inp.char_vectors.dim:
        inp.log(f"bilm: model.bilm.embedding_dim {cfg.bilm.embedding_dim} != word2vec dim {inp.char_vectors.dim}: "
                "the LMs' char embeddings start random, not from word2vec (make the two equal to use it)")
    bilm, metrics = train_bilm(inp.texts(), inp.char_vectors, cfg.bilm, device=inp.device, seed=inp.seed, log=inp.log)
    bilm.save(out)
    inp.log(f"bilm: held-out perplexity f {metrics['heldout_ppl_f']:.3f} b {metrics['heldout_ppl_b']:.3f}")
    return metrics


def _load_bilm(out: Path, cfg: ModelConfig, device: Any) -> nn.Module:
    from cemr.features.bilm import BiLMFeaturizer

    if not out.is_dir():
        raise FileNotFoundError(f"{out}: missing but model.bilm.enabled is true (pretrain with it enabled)")
    return BiLMFeaturizer.load(out, device=device)


# -- BERT --------------------------------------------------------------------------------------


def _pretrain_bert(cfg: ModelConfig, out: Path, inp: PretrainInputs) -> dict[str, float]:
    from cemr.features.bert import pretrain_bert_mlm

    checkpoint = expand_path(cfg.bert.checkpoint)
    if checkpoint and cfg.bert.pretrain_epochs == 0:
        inp.log(f"bert: using {checkpoint} as it is (pretrain_epochs: 0)")
        return {"continued_pretraining": 0.0}
    metrics = pretrain_bert_mlm(inp.texts(), cfg.bert, out, device=inp.device, seed=inp.seed,
                                init_checkpoint=checkpoint, log=inp.log)
    return {**metrics, "continued_pretraining": 1.0 if checkpoint else 0.0}


def bert_source(out: Path, cfg: ModelConfig) -> Path:
    """The directory BERT is loaded from: pretraining's ``out`` when it wrote one, else the
    configured checkpoint (``model.bert.checkpoint`` with ``pretrain_epochs: 0``)."""
    if out.is_dir():
        return out
    checkpoint = expand_path(cfg.bert.checkpoint)
    if checkpoint:
        return Path(checkpoint)
    raise FileNotFoundError(f"{out}: missing and model.bert.checkpoint is not set (run pretraining first)")


def _load_bert(out: Path, cfg: ModelConfig, device: Any) -> nn.Module:
    from cemr.features.bert import BertFeaturizer

    b = cfg.bert
    return BertFeaturizer.load(bert_source(out, cfg), device=device, freeze=b.freeze, window=b.window,
                               stride=b.stride, autocast=b.autocast, window_batch_size=b.window_batch_size)


def _configure_bert(module: nn.Module, cfg: ModelConfig) -> None:
    apply_frozen(module, cfg.bert.freeze)


def _bert_inputs(cfg: ModelConfig) -> dict[str, str | None]:
    return {"model.bert.checkpoint": expand_path(cfg.bert.checkpoint)}


# -- char bigrams ------------------------------------------------------------------------------


def _pretrain_bigram(cfg: ModelConfig, out: Path, inp: PretrainInputs) -> dict[str, float]:
    from cemr.features.bigram import train_bigram_featurizer

    module, metrics = train_bigram_featurizer(inp.texts, cfg.bigram, seed=inp.seed, log=inp.log)
    module.save(out)
    return metrics


def _load_bigram(out: Path, cfg: ModelConfig, device: Any) -> nn.Module:
    from cemr.features.bigram import BigramFeaturizer

    if not out.is_dir():
        raise FileNotFoundError(f"{out}: missing but model.bigram.enabled is true (pretrain with it enabled)")
    return BigramFeaturizer.load(out, device=device, freeze=cfg.bigram.freeze)


def _configure_bigram(module: nn.Module, cfg: ModelConfig) -> None:
    apply_frozen(module, cfg.bigram.freeze)


# -- the registry ------------------------------------------------------------------------------

FEATURIZERS: dict[str, FeaturizerKind] = {
    "bert": FeaturizerKind("bert", _pretrain_bert, _load_bert, configure=_configure_bert, inputs=_bert_inputs,
                           text_cap=lambda cfg: cfg.bert.pretrain_max_sentences),
    "bilm": FeaturizerKind("bilm", _pretrain_bilm, _load_bilm, after_word2vec=True,
                           text_cap=lambda cfg: cfg.bilm.max_sentences),
    "bigram": FeaturizerKind("bigram", _pretrain_bigram, _load_bigram, configure=_configure_bigram),
}


def enabled_featurizers(cfg: ModelConfig) -> list[FeaturizerKind]:
    """The featurizers ``cfg`` turns on, in :data:`FEATURIZERS` order."""
    return [kind for kind in FEATURIZERS.values() if kind.enabled(cfg)]


def feature_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order their features enter the tagger: registered ones in
    :data:`FEATURIZERS` order, then any others (e.g. test fakes) alphabetically."""
    known = list(FEATURIZERS)
    names = list(dict.fromkeys(names))
    return [n for n in known if n in names] + sorted(n for n in names if n not in FEATURIZERS)
