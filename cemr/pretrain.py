"""Pretraining on unlabeled text: word2vec chars -> BiLM -> char BERT (masked LM), saved under one
directory, and loading them back as featurizers.

Layout of ``out_dir``::

    word2vec/   vectors.npy, chars.json                      (always)
    bilm/       bilm_config.json, vocab.json, model.safetensors   (model.bilm.enabled)
    bert/       save_pretrained files, vocab.txt, featurizer.json (model.bert.enabled)
    pretrain_metrics.json                                     flat "<stage>.<metric>" -> number
                                                              (written last, atomically)

With ``model.bert.checkpoint`` set, BERT's masked-LM pretraining continues from that local
checkpoint (CbBERT); with ``pretrain_epochs: 0`` as well, nothing is trained or copied and
:func:`load_featurizers` reads the checkpoint itself.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from cemr.config import ModelConfig, expand_path
from cemr.features.bert import BertFeaturizer, pretrain_bert_mlm
from cemr.features.bilm import BiLMFeaturizer, train_bilm
from cemr.features.word2vec import CharVectors, train_char_word2vec, word2vec_args
from cemr.outputs import atomic_write_text

METRICS_FILE = "pretrain_metrics.json"
WORD2VEC_DIR, BILM_DIR, BERT_DIR = "word2vec", "bilm", "bert"

Log = Callable[[str], None]


def _prefixed(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in metrics.items()}


def pretrain_all(
    texts_factory: Callable[[], Iterable[str]],
    model_cfg: ModelConfig,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
) -> dict[str, float]:
    """Train word2vec, then the BiLM (if enabled), then BERT (if enabled); save all in ``out_dir``.

    ``texts_factory`` returns a fresh iterable of unlabeled texts each call (one call per stage,
    word2vec streams it once per epoch). Returns the flat metrics also written to
    ``pretrain_metrics.json``.
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)  # written again last: never beside half-new outputs
    metrics: dict[str, float] = {}

    started = time.perf_counter()
    vectors = train_char_word2vec(texts_factory, **word2vec_args(model_cfg.word2vec), seed=seed, workers=1)
    vectors.save(out / WORD2VEC_DIR)
    metrics.update(_prefixed("word2vec", {"vocab_size": len(vectors), "dim": vectors.dim,
                                          "seconds": time.perf_counter() - started}))
    say(f"word2vec: {len(vectors)} chars x {vectors.dim}")

    if model_cfg.bilm.enabled:
        if model_cfg.bilm.embedding_dim != vectors.dim:
            say(f"bilm: model.bilm.embedding_dim {model_cfg.bilm.embedding_dim} != word2vec dim {vectors.dim}: "
                "the LMs' char embeddings start random, not from word2vec (make the two equal to use it)")
        bilm, bilm_metrics = train_bilm(texts_factory(), vectors, model_cfg.bilm, device=device, seed=seed, log=log)
        bilm.save(out / BILM_DIR)
        metrics.update(_prefixed("bilm", bilm_metrics))
        say(f"bilm: held-out perplexity f {bilm_metrics['heldout_ppl_f']:.3f} b {bilm_metrics['heldout_ppl_b']:.3f}")

    bert_cfg = model_cfg.bert
    if bert_cfg.enabled:
        checkpoint = expand_path(bert_cfg.checkpoint)
        if checkpoint and bert_cfg.pretrain_epochs == 0:
            say(f"bert: using {checkpoint} as it is (pretrain_epochs: 0)")
            metrics["bert.continued_pretraining"] = 0.0
        else:
            bert_metrics = pretrain_bert_mlm(texts_factory(), bert_cfg, out / BERT_DIR, device=device, seed=seed,
                                             init_checkpoint=checkpoint, log=log)
            metrics.update(_prefixed("bert", bert_metrics))
            metrics["bert.continued_pretraining"] = 1.0 if checkpoint else 0.0

    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def bert_source(out_dir: str | Path, model_cfg: ModelConfig) -> Path:
    """The directory BERT is loaded from: ``out_dir/bert`` when pretraining wrote one, else the
    configured checkpoint."""
    own = Path(out_dir) / BERT_DIR
    if own.is_dir():
        return own
    checkpoint = expand_path(model_cfg.bert.checkpoint)
    if checkpoint:
        return Path(checkpoint)
    raise FileNotFoundError(f"{own}: missing and model.bert.checkpoint is not set (run pretraining first)")


def load_featurizers(out_dir: str | Path, model_cfg: ModelConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``{"char_vectors": CharVectors, "bilm": BiLMFeaturizer | None, "bert": BertFeaturizer | None}``.

    Disabled featurizers are None; an enabled one that pretraining did not write is an error.
    BERT is frozen unless ``model.bert.freeze`` is false; its window, stride, autocast and window
    batch size come from the config (``model.bert.*``).
    """
    out = Path(out_dir)
    if not (out / WORD2VEC_DIR).is_dir():
        raise FileNotFoundError(f"{out / WORD2VEC_DIR}: missing (not a pretraining directory; run pretraining first)")
    result: dict[str, Any] = {"char_vectors": CharVectors.load(out / WORD2VEC_DIR), "bilm": None, "bert": None}
    if model_cfg.bilm.enabled:
        if not (out / BILM_DIR).is_dir():
            raise FileNotFoundError(
                f"{out / BILM_DIR}: missing but model.bilm.enabled is true (pretrain with it enabled)"
            )
        result["bilm"] = BiLMFeaturizer.load(out / BILM_DIR, device=device)
    if model_cfg.bert.enabled:
        bert_cfg = model_cfg.bert
        result["bert"] = BertFeaturizer.load(bert_source(out, model_cfg), device=device, freeze=bert_cfg.freeze,
                                             window=bert_cfg.window, stride=bert_cfg.stride,
                                             autocast=bert_cfg.autocast, window_batch_size=bert_cfg.window_batch_size)
    return result
