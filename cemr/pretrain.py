"""Pretraining on unlabeled text: word2vec chars -> BiLM -> char BERT (masked LM), saved under one
directory, and loading them back as featurizers.

Layout of ``out_dir``::

    word2vec/   vectors.npy, chars.json                      (always)
    bilm/       bilm_config.json, vocab.json, model.safetensors   (model.bilm.enabled)
    bert/       save_pretrained files, vocab.txt, featurizer.json (model.bert.enabled)
                (one directory per featurizer of cemr.features.registry)
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

from cemr.config import ModelConfig
from cemr.features.registry import PretrainInputs, enabled_featurizers
from cemr.features.word2vec import CharVectors, train_char_word2vec, word2vec_args
from cemr.outputs import atomic_write_text

METRICS_FILE = "pretrain_metrics.json"
WORD2VEC_DIR = "word2vec"

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
    """Train word2vec, then each enabled featurizer (:data:`cemr.features.registry.FEATURIZERS`,
    each into ``out_dir/<name>``); save all in ``out_dir``.

    ``texts_factory`` returns a fresh iterable of unlabeled texts each call (one call per stage,
    word2vec streams it once per epoch). Returns the flat metrics (``<stage>.<metric>``) also
    written to ``pretrain_metrics.json``.
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

    inputs = PretrainInputs(texts=texts_factory, char_vectors=vectors, device=device, seed=seed, log=say)
    for kind in enabled_featurizers(model_cfg):
        metrics.update(_prefixed(kind.name, kind.pretrain(model_cfg, out / kind.name, inputs)))

    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def _pretrained(out_dir: str | Path) -> Path:
    """``out_dir`` when pretraining wrote it (its ``word2vec/``, always written first), else
    ``FileNotFoundError``."""
    out = Path(out_dir)
    if not (out / WORD2VEC_DIR).is_dir():
        raise FileNotFoundError(f"{out / WORD2VEC_DIR}: missing (not a pretraining directory; run pretraining first)")
    return out


def load_char_vectors(out_dir: str | Path) -> CharVectors:
    """The word2vec char vectors of a pretraining directory."""
    return CharVectors.load(_pretrained(out_dir) / WORD2VEC_DIR)


def load_featurizers(out_dir: str | Path, model_cfg: ModelConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``{name: module}`` of every featurizer ``model_cfg`` enables, loaded from ``out_dir``
    (configured: BERT frozen unless ``model.bert.freeze`` is false, its window, stride, autocast
    and window batch size from ``model.bert.*``). An enabled one that pretraining did not write is
    an error; so is a directory that was never pretrained."""
    out = _pretrained(out_dir)
    loaded = {}
    for kind in enabled_featurizers(model_cfg):
        module = kind.load(out / kind.name, model_cfg, device)
        kind.configure(module, model_cfg)
        loaded[kind.name] = module
    return loaded

