"""Seed ensembles: models trained on the same run layout (seeds of one config) tag as one (issue #18).

The members' CRF log-potentials are averaged: emissions ``(B, T, K)`` position by position, and the
start, end and transition scores. The average is itself a linear-chain CRF (a product of experts:
its potentials are the geometric mean of the members'), so Viterbi, marginals and ``log P(tags |
x)`` stay exact (:func:`cemr.confidence.crf_infer`) and every confidence method of
:mod:`cemr.confidence` applies to the ensemble unchanged. Members must share what turns text into
a batch (char vocabulary, labels, lexicon and its dictionary tags, the split length): the seeds of
one ``benchmarks/bench_seeds.py`` run do (they share ``components/``); others are refused.

    predictor = load_ensemble([run / "seed1/model", run / "seed2/model", run / "seed3/model"])
    predictor.predict_documents(docs)      # a cemr.predictor.Predictor: every path works with it

``benchmarks/bench_ensemble.py`` scores members, pairs and the whole ensemble on dev and test.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cemr.confidence import DEFAULT_METHOD, crf_infer


class EnsembleError(ValueError):
    """The models cannot be ensembled (they batch text differently)."""


class EnsembleTagger(nn.Module):
    """The taggers of ``members`` as one: :meth:`infer` on their averaged CRF potentials. Offers what
    :class:`cemr.predictor.Predictor` uses of a tagger (``infer``, ``dictionary``, ``featurizers``)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 1:
            raise EnsembleError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.dictionary = members[0].dictionary  # same dictionary tags checked by load_ensemble

    def featurizers(self) -> dict[str, nn.Module]:
        return {}  # fp32 only (load_ensemble refuses other precisions)

    def potentials(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean emissions ``(B, T, K)``, start ``(K,)``, end ``(K,)`` and transitions ``(K, K)``."""
        ems, starts, ends, trans = [], [], [], []
        for m in self.members:
            m.constrain_crf()
            ems.append(m.emissions(batch))
            starts.append(m.crf.start_transitions)
            ends.append(m.crf.end_transitions)
            trans.append(m.crf.transitions)
        mean = lambda xs: torch.stack([x.float() for x in xs]).mean(dim=0)  # noqa: E731
        return mean(ems), mean(starts), mean(ends), mean(trans)

    @torch.no_grad()
    def infer(self, batch: Any) -> Any:
        from cemr.tagger import TaggerOutput

        em, start, end, trans = self.potentials(batch)
        out = crf_infer(em, batch.mask, start, end, trans)
        return TaggerOutput(out.tags, out.marginals, out.log_prob, out.lengths)


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def load_ensemble(model_dirs: Sequence[str | os.PathLike], device: torch.device | str = "cpu", *,
                  confidence: str = DEFAULT_METHOD, batch_size: int = 64, max_len: int | None = None,
                  num_threads: int | None = None) -> Any:
    """A :class:`cemr.predictor.Predictor` over the ensemble of ``model_dirs`` (one directory: that
    model alone, through the same averaging code). :class:`EnsembleError` naming the first directory
    that differs in char vocabulary, labels, lexicon, dictionary tags or split length."""
    from cemr.modeldir import LEXICON_FILE, load_model
    from cemr.predictor import DEFAULT_MAX_LEN, Predictor
    from cemr.training import resolve_device

    dirs = [Path(d) for d in model_dirs]
    if not dirs:
        raise EnsembleError("an ensemble needs at least one model directory")
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    dev = resolve_device(device) if isinstance(device, str) else device
    models = [load_model(d, dev) for d in dirs]
    first = models[0]

    def batching(m: Any, d: Path) -> dict[str, Any]:
        dict_tags = m.tagger.dictionary.vocab if m.tagger.dictionary is not None else None
        return {"char vocabulary": list(m.vocab.itos), "labels": m.labels.to_list(),
                "lexicon": _digest(d / LEXICON_FILE), "dictionary tags": dict_tags,
                "match sets": bool(m.tagger.dictionary is not None and m.tagger.dictionary.match_sets),
                "split length": (m.config.get("inference") or {}).get("max_len")}

    ref = batching(first, dirs[0])
    for m, d in zip(models[1:], dirs[1:]):
        mine = batching(m, d)
        for what in ref:
            if mine[what] != ref[what]:
                raise EnsembleError(f"{d}: its {what} differs from {dirs[0]}'s: only models of one run layout "
                                    f"(the seeds of one config) can be ensembled")
    if max_len is None:
        max_len = int(ref["split length"] or DEFAULT_MAX_LEN)
    for m in models:
        m.tagger.feature_cache_mb = 0.0
        m.tagger.clear_feature_caches()
    tagger = EnsembleTagger([m.tagger for m in models])
    return Predictor(tagger, first.vocab, first.labels, first.lexicon, dev, confidence=confidence,
                     batch_size=batch_size, max_len=max_len)


class EnsembleLoader:
    """A predictor factory for code that takes one model directory string and a ``load(model_dir,
    device, **kwargs)`` factory (:func:`cemr.selftrain.load_predictor`, the pseudo-labeling actors):
    ``model_dir`` is the members' directories joined by ``os.pathsep``. Takes ``confidence``,
    ``batch_size``, ``max_len`` and ``num_threads``; ``precision`` only as ``fp32``."""

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: torch.device | str = "cpu", *,
             precision: str = "fp32", **kwargs: Any) -> Any:
        if precision != "fp32":
            raise EnsembleError(f"precision {precision}: an ensemble runs in fp32 only")
        return load_ensemble(str(model_dir).split(os.pathsep), device, **kwargs)
