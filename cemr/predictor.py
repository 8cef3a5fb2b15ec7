"""Tag raw sentences or whole documents with a saved model, with a confidence per entity.

One :class:`Predictor` per process (per Ray Data actor): :meth:`Predictor.load` reads the model
directory once; every call after that is plain inference (eval mode, ``inference_mode``). Texts
are bucketed by length (:func:`cemr.batching.length_buckets`: a batch is padded only to lengths near its rows',
however long the call), so a call's output order is its input order whatever the batching. Per
batch, the CRF gives tags, marginals and path probabilities in one pass
(:func:`cemr.confidence.crf_infer`), and spans and confidences are computed for the whole batch on
numpy arrays (:func:`cemr.tags.bio_id_spans`, :func:`cemr.confidence.batch_confidences`) before
the per-sentence objects are built (``benchmarks/bench_predictor.py`` compares with the old path).

Confidences follow :mod:`cemr.confidence` (default: per entity, the minimum CRF marginal of its
tags); each sentence also gets a sentence confidence and the probability of its decoded path.
A loaded predictor keeps no cache of frozen featurizer outputs (``feature_cache_mb=0``): the
cache pays off when training revisits the same sentences each epoch, while inference sees each
sentence once, so there it only costs memory: up to ``model.feature_cache_mb`` (1 GiB by
default) per frozen featurizer in every process, e.g. every Ray Data pseudo-labeling actor.
Documents are split into sentences of at most ``max_len`` chars (:func:`split_document`, ignoring
any gold spans the documents carry, so evaluation sees what unseen text sees) and the predicted
spans are shifted back to exact document offsets. :meth:`Predictor.iter_documents` streams: it
reads documents lazily, tags their sentences a step at a time and yields each document as soon as
its last sentence is tagged (``cemr predict --out -`` writes it then); every tagging call takes an
optional progress bar (:mod:`cemr.progress`) advanced by the characters of each batch.

``precision`` (:func:`set_precision`): ``fp32`` (default) is the model as trained; ``bf16`` runs the
featurizers (BERT, BiLM) with bfloat16 weights, ``int8`` quantizes the Linear / LSTM / GRU layers
dynamically (CPU only), ``bf16-int8`` does both (featurizers bf16, the tagger's own layers int8).
All are opt-in: they change confidences (by up to ~1e-2 / ~7e-2) and may change a few spans
(``benchmarks/bench_predictor.py --precision`` measures speed, span agreement and F1 against
the exact path).
"""
from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cemr.batching import length_buckets
from cemr.confidence import batch_confidences
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence, split_document
from cemr.selection import DEFAULT_METHOD, normalize_method
from cemr.tagger import BiLMBNERTagger, make_collator
from cemr.tags import LabelSet, bio_id_spans
from cemr.vocab import CharVocab

DEFAULT_MAX_LEN = 256
STEP_BATCHES = 8  # Predictor.iter_documents tags this many batches of sentences per step


PRECISIONS = ("fp32", "bf16", "int8", "bf16-int8")
_QUANTIZABLE = (nn.Linear, nn.LSTM, nn.GRU)


def set_precision(tagger: BiLMBNERTagger, precision: str) -> BiLMBNERTagger:
    """The tagger set up for inference at ``precision`` (in place; returned for convenience).

    ``fp32``: unchanged (the default; exact). ``bf16``: the featurizers' (BERT, BiLM) weights cast
    to bfloat16, so their matrix products run on bf16 units (AVX-512 BF16 / AMX on recent x86; slow
    where the CPU has none); the tagger casts their outputs back to float32 and its own layers and
    CRF stay float32 (a bf16 BiGRU is slower on CPU). ``int8``: ``torch.ao.quantization.quantize_dynamic``
    of every ``nn.Linear``, ``nn.LSTM`` and ``nn.GRU``, featurizers included (int8 weights,
    activations quantized per call; for CPUs without bf16 units). ``bf16-int8``: featurizers as
    ``bf16``, the tagger's own BiGRU and output layer int8 (the fastest on the benchmark machine).
    int8 runs on CPU only, and not with a featurizer under bf16/fp16 autocast. None but ``fp32`` is
    exact: they are opt-in (``benchmarks/bench_predictor.py --precision`` measures them)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    featurizers = tagger.featurizers()
    if "int8" in precision:
        device = tagger.char_embedding.weight.device
        if device.type != "cpu":
            raise ValueError(f"precision {precision} (dynamic int8 quantization) runs on CPU only, the model "
                             f"is on {device}")
        if precision == "int8":
            for name, module in featurizers.items():
                if getattr(module, "autocast", "off") != "off":
                    raise ValueError(f"precision int8 cannot run the {name} featurizer under {module.autocast} "
                                     f"autocast (its model directory's featurizer.json); use fp32 or bf16")
    if "bf16" in precision:
        for module in featurizers.values():
            module.to(torch.bfloat16)
    if "int8" in precision:
        skip = tuple(f"{n}." for n in featurizers) if precision == "bf16-int8" else ()
        # by name, exact types only: nn.MultiheadAttention's out_proj (a Linear subclass) stays float
        names = {n for n, m in tagger.named_modules() if type(m) in _QUANTIZABLE and not (skip and n.startswith(skip))}
        with warnings.catch_warnings():  # torch.ao's notice that eager quantization moves to torchao
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(
                tagger, {n: torch.ao.quantization.default_dynamic_qconfig for n in names}, dtype=torch.qint8,
                inplace=True,
            )
    return tagger


@dataclass(frozen=True)
class Prediction:
    """One predicted entity: ``span`` (end exclusive; sentence or document offsets) and its confidence."""

    span: Span
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.span.to_dict(), "confidence": self.confidence}


@dataclass
class SentencePrediction(Sequence):
    """The entities of one sentence (iterate / index / ``len`` like a list of :class:`Prediction`),
    plus ``confidence`` (the sentence confidence of the predictor's method) and ``sequence_prob``
    (``P(decoded tags | text)``) and ``token_confidence`` (per character, the CRF marginal of its
    decoded tag: how sure the model is of each ``O`` too). An empty text has no entity and
    confidence 0 (never selected)."""

    entities: list[Prediction] = field(default_factory=list)
    confidence: float = 0.0
    sequence_prob: float = 0.0
    token_confidence: list[float] = field(default_factory=list)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.entities)

    def __len__(self) -> int:
        return len(self.entities)

    def __getitem__(self, i):
        return self.entities[i]

    @property
    def spans(self) -> list[Span]:
        return [p.span for p in self.entities]


class Predictor:
    """A loaded tagger with its vocabulary, labels and lexicon, ready to tag text."""

    def __init__(
        self,
        tagger: BiLMBNERTagger,
        vocab: CharVocab,
        labels: LabelSet,
        lexicon: Any = None,
        device: torch.device | str = "cpu",
        *,
        confidence: str = DEFAULT_METHOD,
        batch_size: int = 64,
        max_len: int = DEFAULT_MAX_LEN,
        precision: str = "fp32",
    ):
        self.method = normalize_method(confidence)
        self.device = torch.device(device)
        self.tagger = set_precision(tagger.to(self.device).eval(), precision)
        self.precision = precision
        self.vocab = vocab
        self.labels = labels
        self.collate = make_collator(tagger, vocab, labels, lexicon)
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        self.batch_size = batch_size
        self.max_len = max_len

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        device: torch.device | str = "cpu",
        *,
        confidence: str = DEFAULT_METHOD,
        batch_size: int = 64,
        max_len: int | None = None,
        featurizer_classes: dict | None = None,
        num_threads: int | None = None,
        feature_cache_mb: float = 0.0,
        precision: str = "fp32",
    ) -> "Predictor":
        """Load a model directory (:mod:`cemr.modeldir`); ``device`` may be ``auto``.

        ``max_len``: the sentence length documents are split into; None: the one the model directory
        records (``config.json`` ``inference.max_len``: the ``data.max_sentence_len`` it was trained
        with), else ``DEFAULT_MAX_LEN``.

        ``feature_cache_mb``: the tagger's per-featurizer output cache (see the module notes);
        0 (default) keeps none, a positive budget helps only callers that tag the same texts again.

        ``num_threads``: ``torch.set_num_threads`` for this whole process; for a dedicated process
        such as a Ray actor given a fraction of the CPUs, where more torch threads than free cores
        contend (``benchmarks/tagger_speed.py --threads``). None: unchanged.

        ``precision``: ``fp32`` (default, exact), ``bf16``, ``int8`` or ``bf16-int8``
        (:func:`set_precision`; opt-in, not exact).
        """
        from cemr.modeldir import load_model
        from cemr.training import resolve_device

        if precision not in PRECISIONS:  # before the (slow) load
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)

        dev = resolve_device(device) if isinstance(device, str) else device
        if feature_cache_mb < 0:
            raise ValueError(f"feature_cache_mb must be >= 0, got {feature_cache_mb}")
        m = load_model(model_dir, dev, featurizer_classes=featurizer_classes)
        m.tagger.feature_cache_mb = float(feature_cache_mb)
        m.tagger.clear_feature_caches()
        if max_len is None:
            max_len = int((m.config.get("inference") or {}).get("max_len") or DEFAULT_MAX_LEN)
        return cls(m.tagger, m.vocab, m.labels, m.lexicon, dev, confidence=confidence,
                   batch_size=batch_size, max_len=max_len, precision=precision)

    # -- sentences -----------------------------------------------------------------------------

    def predict_sentences(self, texts: Sequence[str], batch_size: int | None = None, *,
                          progress: Any = None) -> list[SentencePrediction]:
        """Entities (sentence offsets) with confidences for each text, in input order.
        ``progress`` (anything with ``update(n)``) advances by the characters of each batch tagged."""
        bs = batch_size or self.batch_size
        out: list[SentencePrediction] = [SentencePrediction() for _ in texts]
        with torch.inference_mode():
            for idx in length_buckets([len(t) for t in texts], bs):
                rows = [texts[i] for i in idx]
                batch = self.collate.from_texts(rows).to(self.device)
                for i, pred in zip(idx, self._predict_batch(batch)):
                    out[i] = pred
                if progress is not None:
                    progress.update(sum(map(len, rows)))
        return out

    def _predict_batch(self, batch) -> list[SentencePrediction]:
        """The predictions of one collated batch: CRF outputs to numpy, spans and confidences
        computed for the whole batch, then one :class:`SentencePrediction` per row."""
        result = self.tagger.infer(batch)
        marg = result.marginals.cpu().numpy()  # (B, T, K)
        tags = result.tag_ids.cpu().numpy()  # (B, T)
        lengths = result.lengths.cpu().numpy()  # (B,)
        seq_prob = result.sequence_log_prob.double().exp().cpu().numpy()  # (B,)
        spans = bio_id_spans(tags, lengths)  # (row, start, end, type) arrays
        conf = batch_confidences(marg, tags, lengths, spans, self.method, seq_prob)
        if not (np.isfinite(conf.entity).all() and np.isfinite(conf.sentence).all()):
            raise FloatingPointError("non-finite confidence (emissions overflowed?)")
        types = self.labels.types
        per_row: list[list[Prediction]] = [[] for _ in range(len(lengths))]
        for r, a, e, t, c in zip(*(x.tolist() for x in spans), conf.entity.tolist()):
            per_row[r].append(Prediction(Span(a, e, types[t]), c))
        token, sentence, probs = conf.token, conf.sentence.tolist(), seq_prob.tolist()
        return [SentencePrediction(per_row[r], sentence[r], probs[r], token[r, :n].tolist())
                for r, n in enumerate(lengths.tolist())]

    # -- documents -----------------------------------------------------------------------------

    def split(self, docs: Sequence[Document], max_len: int | None = None) -> list[Sentence]:
        """The sentences the documents are tagged as (gold spans ignored for the split)."""
        n = max_len or self.max_len
        return [s for d in docs for s in _split(d, n)]

    def predict_document_sentences(
        self, docs: Sequence[Document], max_len: int | None = None, batch_size: int | None = None
    ) -> list[tuple[Sentence, SentencePrediction]]:
        """Each sentence of ``docs`` with its prediction (sentence offsets); document order."""
        sents = self.split(docs, max_len)
        return list(zip(sents, self.predict_sentences([s.text for s in sents], batch_size)))

    def iter_documents(
        self, docs: Iterable[Document], max_len: int | None = None, batch_size: int | None = None, *,
        step: int | None = None, progress: Any = None,
    ) -> Iterator[tuple[Document, list[Prediction]]]:
        """``(document, [Prediction])`` for each of ``docs`` in input order (document offsets, sorted
        by span), each one as soon as its last sentence is tagged, so a caller that writes each
        result at once streams its output.

        Documents are read lazily and split into sentences, which are tagged ``step`` at a time
        (default ``STEP_BATCHES * batch_size``; 0: all of them in one call, as
        :meth:`predict_documents`): a long document spans several steps, short ones share one.
        ``progress`` (anything with ``update(n)``, e.g. a :func:`cemr.progress.progress` bar)
        advances by the characters of each batch as it is tagged, and by a document's characters
        outside its sentences (whitespace) when it completes: its total is ``sum(len(d.text))``.
        A document id given twice raises ``ValueError``."""
        n = max_len or self.max_len
        bs = batch_size or self.batch_size
        step = STEP_BATCHES * bs if step is None else step
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        seen: set[str] = set()
        pending: deque[_PendingDocument] = deque()
        queue: list[tuple[_PendingDocument, Sentence]] = []

        def tag(items: list[tuple[_PendingDocument, Sentence]]) -> None:
            preds = self.predict_sentences([s.text for _, s in items], bs, progress=progress)
            for (slot, sent), pred in zip(items, preds):
                slot.add(sent, pred)

        def finished() -> Iterator[tuple[Document, list[Prediction]]]:
            while pending and pending[0].remaining == 0:
                slot = pending.popleft()
                if progress is not None and slot.untagged_chars:
                    progress.update(slot.untagged_chars)
                yield slot.doc, sorted(slot.predictions, key=lambda p: p.span)

        for d in docs:
            if d.id in seen:
                raise ValueError(f"document id {d.id!r} given twice" + (f" ({d.source})" if d.source else ""))
            seen.add(d.id)
            sents = _split(d, n)
            slot = _PendingDocument(d, len(sents), len(d.text) - sum(len(s.text) for s in sents))
            pending.append(slot)
            queue.extend((slot, s) for s in sents)
            while step and len(queue) >= step:
                tag(queue[:step])
                del queue[:step]
            yield from finished()
        if queue:
            tag(queue)
        yield from finished()

    def predict_documents(
        self, docs: Sequence[Document], max_len: int | None = None, batch_size: int | None = None, *,
        progress: Any = None,
    ) -> dict[str, list[Prediction]]:
        """``{doc_id: [Prediction]}`` in document offsets, sorted by span; every document present
        (``[]`` when nothing is found), all sentences tagged in one call (``progress``: as
        :meth:`iter_documents`). Duplicate document ids raise ``ValueError`` before any tagging."""
        return {d.id: preds for d, preds in self.iter_documents(docs, max_len, batch_size, step=0,
                                                                progress=progress)}


def _split(doc: Document, max_len: int) -> list[Sentence]:
    """``doc`` cut as unseen text is (its gold spans ignored)."""
    return split_document(Document(doc.id, doc.text, source=doc.source), max_len)


@dataclass
class _PendingDocument:
    """A document of :meth:`Predictor.iter_documents` whose sentences are being tagged."""

    doc: Document
    remaining: int  # sentences not tagged yet
    untagged_chars: int  # characters outside its sentences (progress only)
    predictions: list[Prediction] = field(default_factory=list)

    def add(self, sent: Sentence, pred: SentencePrediction) -> None:
        text = self.doc.text
        for p in pred:
            span = p.span.shifted(sent.offset)
            if text[span.start : span.end] != sent.text[p.span.start : p.span.end]:
                raise RuntimeError(f"document {sent.doc_id!r}: offset mapping broke at {span}")
            self.predictions.append(Prediction(span, p.confidence))
        self.remaining -= 1
