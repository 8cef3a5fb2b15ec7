"""From a config to trained model directories, in one process (no Ray).

The stages, each writing under one run directory (:class:`RunLayout`) and skipped when its output
is already there (so a rerun or a resumed job does not redo them):

1. ``prepare``: raw inputs -> ``data/{train,dev,test,unlabeled,heldout}`` Parquet shards.
2. ``pretrain``: word2vec chars, BiLM and BERT on the unlabeled pool + train text -> ``pretrain/``.
3. ``components``: label set, char vocabulary (train chars plus the word2vec chars, so text seen only
   in the unlabeled pool still has pretrained embeddings) -> ``components/``; the lexicon (external
   lists + out-of-fold training mentions) is rebuilt deterministically from the config.
4. ``fit``: the plain-torch loop of :mod:`cemr.training`, then a self-contained model directory.

The Ray side (``cluster/``) calls these same functions inside its workers and actors, so a round
trained with Ray Train and one trained here build the identical model.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from cemr.config import Config, dump_config
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence, merge_predictions
from cemr.metrics import EvalReport, evaluate

Log = Callable[[str], None]

COMPONENTS_DIR = "components"


@dataclass(frozen=True)
class RunLayout:
    """Where every stage of a run writes (all under ``root``)."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> "RunLayout":
        return cls(Path(run_dir).resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def components(self) -> Path:
        return self.root / COMPONENTS_DIR

    def split(self, name: str) -> Path:
        return self.data / name

    def round_dir(self, r: int) -> Path:
        return self.root / "rounds" / f"round_{r:03d}"

    def model_dir(self, r: int) -> Path:
        return self.round_dir(r) / "model"


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def prepare_data(cfg: Config, layout: RunLayout, log: Log = print) -> dict[str, Any]:
    """Stage 1: shards + ``prepare_report.json`` (read back when already written)."""
    report_path = layout.data / "prepare_report.json"
    if report_path.is_file():
        log(f"prepare: {layout.data} already prepared")
        return json.loads(report_path.read_text(encoding="utf-8"))
    from cemr.prepare import prepare

    report = prepare(cfg, layout.data)
    out = report.to_dict()
    log(f"prepare: {json.dumps(out.get('sentences', {}), ensure_ascii=False)} sentences written to {layout.data}")
    return out


def load_sentences(layout: RunLayout, split: str) -> list[Sentence]:
    """All sentences of a prepared split (train/dev/test are small: gold sets)."""
    from cemr.corpus.shards import iter_sentences

    path = layout.split(split)
    if not path.exists():
        return []
    return list(iter_sentences(path))


def pretraining_texts(layout: RunLayout, limit: int | None = None) -> Callable[[], Iterator[str]]:
    """A restartable stream of texts for pretraining: train sentences, then the unlabeled pool
    (dev/test are never used, so pretraining cannot leak them)."""
    from cemr.corpus.shards import iter_sentences

    def texts() -> Iterator[str]:
        n = 0
        for split in ("train", "unlabeled"):
            path = layout.split(split)
            if not path.exists():
                continue
            for s in iter_sentences(path):
                if limit is not None and n >= limit:
                    return
                n += 1
                yield s.text

    return texts


def pretrain_stage(cfg: Config, layout: RunLayout, device: Any = "cpu", log: Log = print) -> dict[str, float]:
    """Stage 2: pretrained featurizers in ``pretrain/`` (metrics read back when already there)."""
    from cemr.pretrain import METRICS_FILE, pretrain_all

    metrics_path = layout.pretrain / METRICS_FILE
    if metrics_path.is_file():
        log(f"pretrain: {layout.pretrain} already pretrained")
        return json.loads(metrics_path.read_text(encoding="utf-8"))
    limit = max(
        cfg.model.bilm.max_sentences or 0, cfg.model.bert.pretrain_max_sentences or 0
    ) or None
    report_path = layout.data / "prepare_report.json"
    if limit is not None and report_path.is_file():
        sentences = json.loads(report_path.read_text(encoding="utf-8")).get("sentences", {})
        if sentences.get("unlabeled") and sentences.get("train", 0) >= limit:
            log(f"pretrain: the sentence cap {limit} (model.bilm.max_sentences / model.bert.pretrain_max_sentences) "
                f"is within the {sentences['train']} train sentences, which come first: no unlabeled text is used")
    return pretrain_all(pretraining_texts(layout, limit), cfg.model, layout.pretrain, device=device,
                        seed=cfg.train.seed, log=log)


def pretrain_from_config(cfg: Config, run_dir: str | os.PathLike, device: Any = "auto", log: Log = print
                         ) -> dict[str, float]:
    """``cemr pretrain``: prepare (if needed) and pretrain."""
    from cemr.training import resolve_device

    layout = RunLayout.of(run_dir)
    prepare_data(cfg, layout, log)
    return pretrain_stage(cfg, layout, resolve_device(device) if isinstance(device, str) else device, log)


def sentences_to_documents(sentences: Iterable[Sentence]) -> list[Document]:
    """Gold documents rebuilt from their sentences (text between sentences is not needed: spans
    live inside sentences); used to build the lexicon and to score on document offsets."""
    spans: dict[str, list[Span]] = defaultdict(list)
    pieces: dict[str, list[Sentence]] = defaultdict(list)
    for s in sentences:
        pieces[s.doc_id].append(s)
        spans[s.doc_id].extend(sp.shifted(s.offset) for sp in s.spans)
    docs = []
    for doc_id, sents in pieces.items():
        end = max(s.offset + len(s.text) for s in sents)
        chars = [" "] * end
        for s in sents:
            chars[s.offset : s.offset + len(s.text)] = s.text
        docs.append(Document(doc_id, "".join(chars), spans[doc_id]))
    return docs


@dataclass
class Components:
    """What every model of a run shares: labels, vocabulary, lexicon, pretrained featurizers."""

    labels: Any  # LabelSet
    vocab: Any  # CharVocab
    lexicon: Any  # FoldedLexicon | None
    featurizers: dict[str, Any]  # bilm / bert modules (None when disabled)
    char_vectors: Any  # CharVectors


def build_components(cfg: Config, layout: RunLayout, device: Any = "cpu", log: Log = print) -> Components:
    """Stage 3. Labels and vocabulary are written once to ``components/`` and read back after, so
    every process of a run (driver, Ray workers, a resumed job) uses the same ids."""
    from cemr.lexicon import build_folded_lexicon
    from cemr.pretrain import load_featurizers
    from cemr.tags import LabelSet
    from cemr.vocab import CharVocab

    feats = load_featurizers(layout.pretrain, cfg.model, device)
    train = load_sentences(layout, "train")
    comp = layout.components
    labels_file, vocab_file = comp / "labels.json", comp / "vocab.json"
    if labels_file.is_file() and vocab_file.is_file():
        labels = LabelSet.from_list(json.loads(labels_file.read_text(encoding="utf-8")))
        vocab = CharVocab.load(vocab_file)
    else:
        types = {sp.type for s in train for sp in s.spans}
        types.update(sp.type for s in load_sentences(layout, "dev") for sp in s.spans)
        types.update(cfg.data.types or ())
        if not types:
            raise ValueError(f"{layout.split('train')}: no entity in the training data")
        labels = LabelSet.from_types(sorted(types))
        vocab = CharVocab(sorted(set(CharVocab.build(s.text for s in train).chars) | set(feats["char_vectors"].chars)))
        comp.mkdir(parents=True, exist_ok=True)
        tmp = labels_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(labels.to_list(), ensure_ascii=False), encoding="utf-8")
        vocab.save(vocab_file)
        os.replace(tmp, labels_file)
        log(f"components: {labels.num_tags} tags, {len(vocab)} chars")
    lexicon = None
    if cfg.model.dictionary.enabled:
        lexicon = build_folded_lexicon(cfg.lexicon, sentences_to_documents(train), group=fold_group(cfg.data.format))
    return Components(labels, vocab, lexicon, {"bilm": feats["bilm"], "bert": feats["bert"]}, feats["char_vectors"])


def fold_group(fmt: str) -> Callable[[Document], str] | None:
    """Documents that must share a lexicon fold: CCKS2017's section texts ``<section>-<record>``
    of one patient record go together (:func:`cemr.prepare.record_key`), so a record's mentions
    never reach its own other sections."""
    from cemr.prepare import record_key

    record = record_key(fmt)
    return (lambda doc: record(doc.id)) if record is not None else None


def new_tagger(cfg: Config, comps: Components, init_from: str | os.PathLike | None = None):
    """A fresh tagger and its collate function. Its initial weights come from ``train.seed`` alone
    (a forked torch RNG: the caller's random state is neither used nor changed), so every process
    of a run, and every run of the same config, starts from the same weights. ``init_from``: a
    model directory of the same run (same vocabulary and labels) whose weights replace the
    trainable ones (``selftrain.warm_start``)."""
    import torch

    from cemr.modeldir import ModelDirError, read_weights
    from cemr.tagger import build_tagger, make_collator

    dict_types = comps.lexicon.types() if comps.lexicon is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.train.seed))
        tagger = build_tagger(cfg.model, comps.labels, comps.vocab, bert=comps.featurizers.get("bert"),
                              bilm=comps.featurizers.get("bilm"), char_vectors=comps.char_vectors,
                              dictionary_types=dict_types)
    if init_from is not None:
        state = read_weights(init_from, vocab=comps.vocab, labels=comps.labels)
        try:
            tagger.load_checkpoint_state(state)
        except (ValueError, RuntimeError) as exc:
            raise ModelDirError(f"{init_from}: cannot start the tagger from these weights: {exc}") from exc
    return tagger, make_collator(tagger, comps.vocab, comps.labels, comps.lexicon)


def save_round_model(cfg: Config, comps: Components, tagger: Any, out_dir: str | os.PathLike,
                     extra: dict[str, Any] | None = None) -> Path:
    from cemr.modeldir import save_model
    from cemr.training import unwrap

    return save_model(out_dir, unwrap(tagger), vocab=comps.vocab, labels=comps.labels, lexicon=comps.lexicon,
                      model_config=cfg.model, extra=extra, overwrite=True)


# ----------------------------------------------------------------------------------------------
# Evaluation on document offsets
# ----------------------------------------------------------------------------------------------


def evaluate_predictor_on_sentences(predictor: Any, sentences: Sequence[Sentence], batch_size: int = 64
                                    ) -> EvalReport:
    """Tag each gold sentence, map predictions back to document offsets, score per document."""
    preds = predictor.predict_sentences([s.text for s in sentences], batch_size)
    pred_docs = merge_predictions(sentences, [p.spans for p in preds])
    gold_docs = merge_predictions(sentences, [s.spans for s in sentences])
    return evaluate(gold_docs, pred_docs)


def evaluate_model_dir(model_dir: str | os.PathLike, fmt: str, data: str | os.PathLike, device: str = "auto",
                       max_len: int | None = None) -> EvalReport:
    """``cemr evaluate``: read a labeled corpus, tag whole documents (split and mapped back), score."""
    from cemr.corpus.readers import read_documents
    from cemr.predictor import Predictor

    predictor = Predictor.load(model_dir, device)
    docs = list(read_documents(fmt, data))
    preds = predictor.predict_documents(docs, max_len=max_len)
    return evaluate(docs, {k: [p.span for p in v] for k, v in preds.items()})


def predict_files(model_dir: str | os.PathLike, inputs: Sequence[str], out: str | os.PathLike, *,
                  input_format: str = "text", out_format: str = "jsonl", device: str = "auto",
                  column: str | None = None, chunk: int = 256) -> int:
    """``cemr predict``: tag documents from files in chunks; JSON lines (spans with confidence, on
    document offsets) or BRAT. Returns the number of documents written."""
    from cemr.corpus.readers import read_documents, read_unlabeled
    from cemr.corpus.writers import write_brat
    from cemr.predictor import Predictor

    predictor = Predictor.load(model_dir, device)

    def docs() -> Iterator[Document]:
        for path in inputs:
            if input_format == "text":
                yield from read_unlabeled(path, column=column)
            else:
                yield from read_documents(input_format, path)

    def tagged() -> Iterator[tuple[Document, list[Any]]]:
        buf: list[Document] = []
        for d in docs():
            buf.append(d)
            if len(buf) >= chunk:
                yield from _tag_chunk(predictor, buf)
                buf = []
        if buf:
            yield from _tag_chunk(predictor, buf)

    n = 0
    if out_format == "brat":
        n = write_brat((Document(d.id, d.text, [p.span for p in preds]) for d, preds in tagged()), out)
        return n
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for d, preds in tagged():
            row = {"id": d.id, "text": d.text,
                   "entities": [{**p.span.to_dict(), "mention": d.text[p.span.start:p.span.end],
                                 "confidence": round(p.confidence, 6)} for p in preds]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _tag_chunk(predictor: Any, docs: list[Document]) -> Iterator[tuple[Document, list[Any]]]:
    preds = predictor.predict_documents(docs)
    for d in docs:
        yield d, preds[d.id]


# ----------------------------------------------------------------------------------------------
# Supervised training (``cemr train``)
# ----------------------------------------------------------------------------------------------


def train_from_config(cfg: Config, run_dir: str | os.PathLike, log: Log = print) -> dict[str, Any]:
    """Prepare, pretrain, train on gold only, save ``RUN_DIR/model``, score dev (and test)."""
    from cemr.predictor import Predictor
    from cemr.training import resolve_device, train_tagger

    layout = RunLayout.of(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    (layout.root / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    device = resolve_device(cfg.train.device)
    prepare_data(cfg, layout, log)
    pretrain = pretrain_stage(cfg, layout, device, log)
    comps = build_components(cfg, layout, device, log)
    train, dev, test = (load_sentences(layout, s) for s in ("train", "dev", "test"))
    tagger, collate = new_tagger(cfg, comps)
    result = train_tagger(tagger, train, dev, cfg.train, device, collate=collate, labels=comps.labels, log=log)
    model_dir = save_round_model(cfg, comps, tagger, layout.root / "model",
                                 extra={"best_dev_f1": result.best_dev_f1, "best_epoch": result.best_epoch})
    predictor = Predictor.load(model_dir, device, max_len=cfg.data.max_sentence_len)
    summary: dict[str, Any] = {
        "model": str(model_dir),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_sentences": len(train),
        "pretrain": pretrain,
    }
    for name, sents in (("dev", dev), ("test", test)):
        if sents:
            summary[name] = evaluate_predictor_on_sentences(predictor, sents).to_dict()
    (layout.root / "train_report.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return summary
