"""From a config to trained model directories, in one process (no Ray).

The stages, each writing under one run directory (:class:`RunLayout`). A finished stage leaves a
marker of what its output depends on (config keys, input files, the stage it was built from:
:mod:`cemr.fingerprint`); a rerun or a resumed job reuses the output when the marker matches its
config and refuses the run directory (:class:`cemr.fingerprint.StaleStageError`) when it does not:

1. ``prepare``: raw inputs -> ``data/{train,dev,test,unlabeled,heldout}`` Parquet shards.
2. ``pretrain``: word2vec chars, BiLM, BERT (and bigram vectors when enabled) on the unlabeled pool +
   train text -> ``pretrain/``.
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
from typing import Any, Callable, Iterable, Iterator

from cemr.config import Config, dump_config
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence
from cemr.outputs import atomic_write_text
from cemr.progress import say

Log = Callable[[str], None]

COMPONENTS_DIR = "components"
TRAIN_REPORT = "train_report.json"


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


def prepare_dir(cfg: Config, data_dir: str | os.PathLike, log: Log = say) -> dict[str, Any]:
    """Stage 1 into ``data_dir``: shards + ``prepare_report.json`` + the stage marker; the report is
    read back when the marker matches ``cfg`` (:func:`cemr.fingerprint.check_stage`)."""
    from cemr.fingerprint import check_stage, prepare_fingerprint, write_marker
    from cemr.prepare import REPORT_NAME, prepare

    data_dir = Path(data_dir)
    report_path = data_dir / REPORT_NAME
    fp = prepare_fingerprint(cfg)
    if check_stage(data_dir, fp, has_output=report_path.is_file()):
        log(f"prepare: {data_dir} already prepared for this config")
        return json.loads(report_path.read_text(encoding="utf-8"))
    out = prepare(cfg, data_dir).to_dict()
    write_marker(data_dir, fp)
    log(f"prepare: {json.dumps(out.get('sentences', {}), ensure_ascii=False)} sentences written to {data_dir}")
    return out


def prepare_data(cfg: Config, layout: RunLayout, log: Log = say) -> dict[str, Any]:
    """Stage 1 of a run: :func:`prepare_dir` into ``layout.data``."""
    return prepare_dir(cfg, layout.data, log)


def load_sentences(layout: RunLayout, split: str) -> list[Sentence]:
    """All sentences of a prepared split (train/dev/test are small: gold sets)."""
    from cemr.corpus.shards import iter_sentences

    path = layout.split(split)
    if not path.exists():
        return []
    return list(iter_sentences(path))


def load_documents(layout: RunLayout, split: str) -> list[Document]:
    """The dev or test documents whole, with every gold span (``data/documents/<split>.jsonl``,
    written by prepare for a non-empty split): what evaluation scores. ``[]`` for a split without
    documents."""
    from cemr.corpus.readers import read_documents
    from cemr.prepare import DOCUMENTS_DIR

    path = layout.data / DOCUMENTS_DIR / f"{split}.jsonl"
    if not path.is_file():
        return []
    return list(read_documents("jsonl", path, strict=True))


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


def pretrain_stage(cfg: Config, layout: RunLayout, device: Any = "cpu", log: Log = say) -> dict[str, float]:
    """Stage 2: pretrained featurizers in ``pretrain/`` + the stage marker; the metrics are read
    back when the marker has every featurizer ``cfg`` needs, made from the same keys and the same
    prepared data (:func:`cemr.fingerprint.pretrain_fingerprint`). Needs a finished prepare stage."""
    from cemr.fingerprint import (check_stage, pretrain_fingerprint, pretrain_seed, pretraining_text_cap,
                                  recorded_digest, write_marker)
    from cemr.pretrain import METRICS_FILE, pretrain_all

    metrics_path = layout.pretrain / METRICS_FILE
    fp = pretrain_fingerprint(cfg, recorded_digest(layout.data, "prepare"))
    if check_stage(layout.pretrain, fp, has_output=metrics_path.is_file()):
        log(f"pretrain: {layout.pretrain} already pretrained for this config")
        return json.loads(metrics_path.read_text(encoding="utf-8"))
    limit = pretraining_text_cap(cfg)
    report_path = layout.data / "prepare_report.json"
    if limit is not None and report_path.is_file():
        sentences = json.loads(report_path.read_text(encoding="utf-8")).get("sentences", {})
        if sentences.get("unlabeled") and sentences.get("train", 0) >= limit:
            log(f"pretrain: the sentence cap {limit} (the largest of model.bilm.max_sentences, "
                f"model.bert.pretrain_max_sentences) "
                f"is within the {sentences['train']} train sentences, which come first: no unlabeled text is used")
    metrics = pretrain_all(pretraining_texts(layout, limit), cfg.model, layout.pretrain, device=device,
                           seed=pretrain_seed(cfg), log=log)
    write_marker(layout.pretrain, fp)
    return metrics


def stages_done(cfg: Config, layout: RunLayout) -> bool:
    """True when ``data/`` and ``pretrain/`` hold ``cfg``'s output (both markers match), False when
    one of them is still to run; :class:`cemr.fingerprint.StaleStageError` when one was made from
    another config or other inputs. Only ``stat`` calls: cheap."""
    from cemr.fingerprint import check_stage, prepare_fingerprint, pretrain_fingerprint, recorded_digest
    from cemr.prepare import REPORT_NAME
    from cemr.pretrain import METRICS_FILE

    if not check_stage(layout.data, prepare_fingerprint(cfg), (layout.data / REPORT_NAME).is_file()):
        return False
    fp = pretrain_fingerprint(cfg, recorded_digest(layout.data, "prepare"))
    return check_stage(layout.pretrain, fp, (layout.pretrain / METRICS_FILE).is_file())


def pretrain_from_config(cfg: Config, run_dir: str | os.PathLike, device: Any = "auto", log: Log = say
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
    featurizers: dict[str, Any]  # name -> module, the enabled ones (cemr.features.registry)
    char_vectors: Any  # CharVectors


def build_components(cfg: Config, layout: RunLayout, device: Any = "cpu", log: Log = say) -> Components:
    """Stage 3. Labels and vocabulary are written once to ``components/`` (with the stage marker)
    and read back after, so every process of a run (driver, Ray workers, a resumed job) uses the
    same ids; read back only when made from the same prepared data, word2vec chars and
    ``data.types`` (:func:`cemr.fingerprint.components_fingerprint`)."""
    from cemr.fingerprint import check_stage, components_fingerprint, recorded_digest, write_marker
    from cemr.lexicon import build_folded_lexicon
    from cemr.pretrain import load_char_vectors, load_featurizers
    from cemr.tags import LabelSet
    from cemr.vocab import CharVocab

    fp = components_fingerprint(cfg, recorded_digest(layout.data, "prepare"),
                                recorded_digest(layout.pretrain, "pretrain", "word2vec"))
    featurizers = load_featurizers(layout.pretrain, cfg.model, device)
    char_vectors = load_char_vectors(layout.pretrain)
    train = load_sentences(layout, "train")
    comp = layout.components
    labels_file, vocab_file = comp / "labels.json", comp / "vocab.json"
    if check_stage(comp, fp, has_output=labels_file.is_file() or vocab_file.is_file()):
        labels = LabelSet.from_list(json.loads(labels_file.read_text(encoding="utf-8")))
        vocab = CharVocab.load(vocab_file)
    else:
        types = {sp.type for s in train for sp in s.spans}
        types.update(sp.type for s in load_sentences(layout, "dev") for sp in s.spans)
        types.update(cfg.data.types or ())
        if not types:
            raise ValueError(f"{layout.split('train')}: no entity in the training data")
        labels = LabelSet.from_types(sorted(types))
        vocab = CharVocab(sorted(set(CharVocab.build(s.text for s in train).chars) | set(char_vectors.chars)))
        comp.mkdir(parents=True, exist_ok=True)
        atomic_write_text(labels_file, json.dumps(labels.to_list(), ensure_ascii=False))
        vocab.save(vocab_file)
        write_marker(comp, fp)
        log(f"components: {labels.num_tags} tags, {len(vocab)} chars")
    if cfg.model.char_dim != char_vectors.dim:
        log(f"warning: model.char_dim {cfg.model.char_dim} != word2vec dim {char_vectors.dim}: the tagger's char "
            "embedding starts random, not from word2vec (make the two equal to use it)")
    lexicon = None
    if cfg.model.dictionary.enabled:
        lexicon = build_folded_lexicon(cfg.lexicon, sentences_to_documents(train), group=fold_group(cfg.data.format))
    return Components(labels, vocab, lexicon, featurizers, char_vectors)


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
        tagger = build_tagger(cfg.model, comps.labels, comps.vocab, char_vectors=comps.char_vectors,
                              dictionary_types=dict_types, **comps.featurizers)
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
                      model_config=cfg.model, extra=extra, inference={"max_len": cfg.data.max_sentence_len},
                      overwrite=True)


# ----------------------------------------------------------------------------------------------
# Supervised training (``cemr train``)
# ----------------------------------------------------------------------------------------------


def evaluate_splits(predictor: Any, layout: RunLayout, batch_size: int = 64) -> dict[str, Any]:
    """``{"dev": report, "test": report}`` (those the run has) of a model: its dev and test
    documents tagged whole through :func:`cemr.inference.evaluate_documents`, every gold span
    scored on document offsets."""
    from cemr.inference import evaluate_documents

    out = {}
    for name in ("dev", "test"):
        docs = load_documents(layout, name)
        if docs:
            out[name] = evaluate_documents(predictor, docs, batch_size).to_dict()
    return out


def train_from_config(cfg: Config, run_dir: str | os.PathLike, log: Log = say) -> dict[str, Any]:
    """Prepare, pretrain, train on gold only, save ``RUN_DIR/model``, score dev (and test).

    The stages are reused or refused as :func:`prepare_data` & co. decide; the model, ``config.yaml``
    and ``train_report.json`` are always this call's."""
    from cemr.predictor import Predictor
    from cemr.training import resolve_device, train_tagger

    layout = RunLayout.of(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    prepare_data(cfg, layout, log)
    pretrain = pretrain_stage(cfg, layout, device, log)
    comps = build_components(cfg, layout, device, log)
    # the stages matched: the model of this config replaces the one there; the report (written
    # last) is removed first, so a report beside config.yaml is always this config's
    (layout.root / TRAIN_REPORT).unlink(missing_ok=True)
    atomic_write_text(layout.root / "config.yaml", dump_config(cfg))
    train, dev = load_sentences(layout, "train"), load_sentences(layout, "dev")
    tagger, collate = new_tagger(cfg, comps)
    result = train_tagger(tagger, train, dev, cfg.train, device, collate=collate, labels=comps.labels, log=log,
                          dev_documents=load_documents(layout, "dev"))
    model_dir = save_round_model(cfg, comps, tagger, layout.root / "model",
                                 extra={"best_dev_f1": result.best_dev_f1, "best_epoch": result.best_epoch})
    predictor = Predictor.load(model_dir, device)
    summary: dict[str, Any] = {
        "model": str(model_dir),
        "best_epoch": result.best_epoch,  # selected on dev; test is reported for that model
        "epochs_run": len(result.history),
        "train_sentences": len(train),
        "pretrain": pretrain,
    }
    summary.update(evaluate_splits(predictor, layout, cfg.train.eval_batch_size))
    atomic_write_text(layout.root / TRAIN_REPORT, json.dumps(summary, ensure_ascii=False, indent=1))
    return summary
