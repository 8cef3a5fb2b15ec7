"""A fake predictor and a tiny unlabeled corpus for the Ray pipeline tests.

The predictor has the interface of ``cemr.predictor.Predictor`` (``load(model_dir, device,
confidence=...)``, ``predict_sentences(texts, batch_size)`` returning per text an object with
``entities`` (``.span``, ``.confidence``) and a sentence ``confidence``) without torch, so actors
start fast. Every ``load`` appends ``<pid> <device>`` to ``<model_dir>/loads.log``: a test can
count predictor loads (one per actor) and see the device it was given; a ``num_threads`` given
(``cluster.actor_threads``) goes to ``<model_dir>/threads.log``.

Sentence kinds (by ``i % 10``), with the outcome at threshold 0.7:

=====  ==========================  ===================  ====================
i%10   text                        sentence mode        entity mode
=====  ==========================  ===================  ====================
0      contains BOOM               failed (raises)      failed
1      contains BAD                failed (bad span)    failed
2-4    高血压 (0.95)               kept, 1 entity       kept, 1 entity
5-6    头痛 (0.4)                  below                below
7      高血压 (0.95) + 头痛 (0.4)  below                kept, 1 entity
8-9    no entity (sentence 0.99)   kept, 0 entities     below
=====  ==========================  ===================  ====================
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence

DISEASE = "疾病和诊断"
SYMPTOM = "症状和体征"


@dataclass(frozen=True)
class FakePrediction:
    span: Span
    confidence: float


@dataclass
class FakeSentencePrediction:
    entities: list = field(default_factory=list)
    confidence: float = 0.0


class KeywordPredictor:
    def __init__(self, device: str):
        self.device = device

    @classmethod
    def load(cls, model_dir, device, confidence="entity_min_marginal", num_threads=None):
        with open(Path(model_dir) / "loads.log", "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {device}\n")
        if num_threads is not None:  # cluster.actor_threads reached the actor
            with open(Path(model_dir) / "threads.log", "a", encoding="utf-8") as f:
                f.write(f"{num_threads}\n")
        return cls(device)

    def predict_sentences(self, texts, batch_size=None):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("cannot tag BOOM")
        out = []
        for t in texts:
            preds = []
            i = t.find("高血压")
            if i >= 0:
                preds.append(FakePrediction(Span(i, i + 3, DISEASE), 0.95))
            j = t.find("头痛")
            if j >= 0:
                preds.append(FakePrediction(Span(j, j + 2, SYMPTOM), 0.4))
            if "BAD" in t:
                preds.append(FakePrediction(Span(0, len(t) + 5, DISEASE), 0.9))
            out.append(FakeSentencePrediction(preds, min((p.confidence for p in preds), default=0.99)))
        return out


def text_for(i: int) -> str:
    kind = i % 10
    if kind == 0:
        return f"患者BOOM第{i}例"
    if kind == 1:
        return f"BAD记录{i}"
    if kind in (2, 3, 4):
        return f"既往高血压病史{i}年"
    if kind in (5, 6):
        return f"头痛{i}天"
    if kind == 7:
        return f"高血压伴头痛{i}天"
    return f"无特殊{i}"


def corpus(n: int) -> list[Sentence]:
    """``n`` sentences over ``n // 4`` documents (sent ids 0..3)."""
    return [Sentence(f"doc{i // 4}", i % 4, 10 * (i % 4), text_for(i), []) for i in range(n)]


def expected_counts(n: int, mode: str) -> dict[str, int]:
    kinds = [i % 10 for i in range(n)]
    failed = sum(k in (0, 1) for k in kinds)
    if mode == "sentence":
        kept = sum(k in (2, 3, 4, 8, 9) for k in kinds)
    else:
        kept = sum(k in (2, 3, 4, 7) for k in kinds)
    return {"kept": kept, "below_threshold": n - failed - kept, "failed": failed}


def expected_entities(n: int, mode: str) -> int:
    kinds = [i % 10 for i in range(n)]
    return sum(k in ((2, 3, 4) if mode == "sentence" else (2, 3, 4, 7)) for k in kinds)


# Config overrides of a tiny demo run for the Ray tests: small model, word2vec only (no BiLM/BERT
# pretraining), 2 local CPUs; each test module adds its own epochs and self-training keys.
TINY_RUN = [
    "data.demo_documents=40", "data.demo_unlabeled=200", "model.char_dim=16", "model.gru_hidden=16",
    "model.attention_heads=2", "model.word2vec.dim=16", "model.word2vec.epochs=1", "model.bilm.enabled=false",
    "model.bert.enabled=false", "model.dictionary.dim=8", "lexicon.folds=2",
    "cluster.num_cpus=2", "cluster.cpus_per_worker=0.5", "cluster.actors=1",
]
