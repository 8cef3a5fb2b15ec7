"""``prepare``: raw labeled and unlabeled inputs -> sentence shards + an accounting report.

Output (``out_dir``)::

    train/part-*.parquet      gold sentences the tagger trains on    (source "gold")
    dev/part-*.parquet        gold sentences for model selection     (source "gold")
    test/part-*.parquet       gold sentences for the final figure    (source "gold"; may be empty)
    documents/{dev,test}.jsonl  the dev / test documents whole, every gold span (what is scored)
    unlabeled/part-*.parquet  the unlabeled pool, spans always []    (source: input tag, "heldout")
    heldout/part-*.parquet    hidden gold of the "heldout" rows      (source "heldout_gold")
    prepare_report.json       see PrepareReport

Shards use :data:`cemr.corpus.shards.SENTENCE_SCHEMA`; an empty split is one shard of zero rows.

Rules (all deterministic for the config; no randomness from the process):

* **Labeled documents** come from ``data.train`` in ``data.format`` (``demo``: the built-in
  corpus, :func:`cemr.demo.generate_demo`; ``auto``: detected per input), validated by the same
  reader machinery (types, overlap policy). A format that does not fit the data, or an input
  without labels, stops the run (:func:`cemr.corpus.detect.resolve_format`). A document id seen
  twice across the labeled inputs is rejected the second time (reason ``duplicate_id``). Once an
  input is read, the rejection policy applies (:func:`cemr.corpus.policy.check_rejections`,
  ``data.max_rejected`` / ``data.strict``): all records rejected, more than ``max_rejected`` of
  them, or any with ``strict``, stops the run with the counts and the first rejections.
* **Split** by patient record. ``data.dev`` / ``data.test`` paths, when given, are the dev / test
  sets. Otherwise dev (``dev_fraction``) and test (``test_fraction``) are carved from train:
  records are ranked by ``BLAKE2b(f"{split_seed}:split:{record}")`` and the first ``round(n *
  test_fraction)`` go to test, the next ``round(n * dev_fraction)`` to dev (at least one each when
  the fraction is > 0), the rest to train, each with all its documents. A record is a document
  except in CCKS2017, whose section texts ``<section>-<record>`` belong to one record
  (:func:`record_key`). The rank depends only on the seed and the ids, not on the input order.
* **Low-resource protocol** (``labeled_fraction < 1``): train records are ranked again by
  ``BLAKE2b(f"{split_seed}:labeled:{record}")``; the first ``max(1, round(n_train *
  labeled_fraction))`` stay labeled, the documents of the others are **held out**: their text
  joins the unlabeled pool (rows with ``source="heldout"``, ``spans=[]``, under their own doc id)
  and their gold spans go to ``heldout/`` only, under the same ``(doc_id, sent_id)`` keys. A tagger reading
  ``train/`` or ``unlabeled/`` never sees them; pseudo-labels of the ``heldout`` rows can be
  scored against ``heldout/``.
* **Unlabeled pool**: held-out documents first, then the demo texts (format ``demo``), then every
  ``data.unlabeled`` source in order (ids become ``<tag>:<reader id>``, tag ``u0``, ``u1``...;
  ``source`` is the tag). Each document goes through one :class:`cemr.corpus.dedup.Deduper`
  (NFKC/whitespace/case normalised; exact hash + MinHash-LSH near duplicates, Jaccard >=
  ``dedup_threshold`` on char 5-grams, verified exactly) seeded with the dev and test documents
  (reason ``leakage``) and the labeled train documents (reason ``train_duplicate``), so a document
  is removed as ``exact`` / ``near`` (a duplicate of an earlier pool document), ``leakage`` or
  ``train_duplicate``. ``data.max_unlabeled`` caps the number of pool documents kept from the
  unlabeled sources (held-out documents do not count); reading stops there and the report says
  so. Documents are then split into sentences; a sentence whose normalised text equals a dev/test
  sentence is removed (``leakage_sentence``), and one equal to an earlier pool sentence too
  (``exact_sentence``; ``prepare(..., sentence_dedup=False)`` keeps those).
* Every document is split with ``data.max_sentence_len`` by
  :func:`cemr.corpus.sentences.split_document`: train text guided by its gold spans (a cut never
  falls inside a mention unless unavoidable; such spans are counted); dev, test and held-out text
  the way unseen text is (``guided=False``, :meth:`cemr.predictor.Predictor.split`), gold mapped
  onto the sentences afterwards. A dev/test span a cut falls inside is counted
  (``spans_crossing_split``) and stays in ``documents/``: scored on the whole document it is a
  miss, never dropped.

Labeled documents are held in memory (corpora of thousands of records); unlabeled text streams
(only the dedup index grows with it).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cemr.config import Config, ConfigError, DataConfig, UnlabeledSource, expand_path, to_dict
from cemr.corpus.dedup import LEAKAGE, Deduper, normalize, text_digest
from cemr.corpus.detect import AUTO, LABELED_FORMATS, resolve_format
from cemr.corpus.document import Document, ReadReport
from cemr.corpus.policy import check_rejections
from cemr.corpus.readers import INPUT_FORMATS, read_documents, read_unlabeled
from cemr.corpus.sentences import Sentence, SplitStats, split_document
from cemr.corpus.shards import ShardWriter
from cemr.corpus.validate import DUPLICATE_ID, RawSpan, RecordBuilder
from cemr.corpus.writers import write_jsonl
from cemr.outputs import atomic_write_text
from cemr.progress import progress

SPLITS = ("train", "dev", "test", "unlabeled", "heldout")
GOLD = "gold"
HELDOUT = "heldout"
HELDOUT_GOLD = "heldout_gold"
TRAIN_DUPLICATE = "train_duplicate"
EXACT_SENTENCE = "exact_sentence"
LEAKAGE_SENTENCE = "leakage_sentence"
MAX_ISSUES = 100  # issues listed per input in the report (all are counted in "reasons")
REPORT_NAME = "prepare_report.json"
DOCUMENTS_DIR = "documents"  # dev/test documents whole (cemr jsonl), what evaluation scores


# ----------------------------------------------------------------------------------------------
# Pure rules
# ----------------------------------------------------------------------------------------------


def stable_rank(seed: int, salt: str, doc_id: str) -> int:
    """A 64-bit rank of a document id for a seed: the same in every process and platform."""
    digest = hashlib.blake2b(f"{seed}:{salt}:{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(ids: Iterable[str], seed: int, salt: str) -> list[str]:
    """``ids`` sorted by :func:`stable_rank` (ties, practically impossible, by id)."""
    return sorted(ids, key=lambda i: (stable_rank(seed, salt, i), i))


def _share(n: int, fraction: float) -> int:
    """``round(n * fraction)``, at least 1 when the fraction is > 0 and n > 0."""
    if fraction <= 0 or n == 0:
        return 0
    return max(1, round(n * fraction))


def record_key(fmt: str) -> Callable[[str], str] | None:
    """The patient record a document id belongs to, for formats whose documents are parts of a
    record: CCKS2017's section texts ``<section>-<record>``. None: each document is its own record.
    Splits, the held-out part of the low-resource protocol and the lexicon folds keep a record's
    documents together, so no patient's text is on both sides."""
    if fmt == "ccks2017":
        return lambda doc_id: doc_id.rsplit("-", 1)[-1]
    return None


def assign_splits(ids: Iterable[str], dev_fraction: float, test_fraction: float, seed: int,
                  record: Callable[[str], str] | None = None) -> dict[str, str]:
    """``{doc_id: "train" | "dev" | "test"}`` by the documented hash-rank rule, applied to records
    (``record``: doc id -> record id, see :func:`record_key`; default: every document its own).

    Raises ``ValueError`` when no record would be left for train.
    """
    ids, key = list(ids), record or (lambda i: i)
    order = ranked({key(i) for i in ids}, seed, "split")
    n = len(order)
    n_test = _share(n, test_fraction)
    n_dev = _share(n, dev_fraction)
    if n and n_test + n_dev >= n:
        raise ValueError(f"{n} labeled record(s) cannot give {n_test} test + {n_dev} dev "
                         "and at least one train record")
    role = {r: "test" if k < n_test else "dev" if k < n_test + n_dev else "train" for k, r in enumerate(order)}
    return {i: role[key(i)] for i in ids}


def choose_labeled(ids: Iterable[str], fraction: float, seed: int, record: Callable[[str], str] | None = None
                   ) -> tuple[set[str], set[str]]:
    """``(labeled, heldout)`` ids of the train split for ``labeled_fraction`` (documented rule,
    applied to records like :func:`assign_splits`)."""
    ids, key = list(ids), record or (lambda i: i)
    if fraction >= 1.0:
        return set(ids), set()
    order = ranked({key(i) for i in ids}, seed, "labeled")
    k = max(1, round(len(order) * fraction)) if order else 0
    kept = set(order[:k])
    return {i for i in ids if key(i) in kept}, {i for i in ids if key(i) not in kept}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """Everything ``prepare`` did, written to ``out_dir/prepare_report.json``.

    * ``inputs``: one entry per input (role train/dev/test/unlabeled; path, format, the reader's
      accounting ``read == kept + rejected`` with reasons and the first issues; for unlabeled
      inputs the pool outcome ``documents == kept + sum(removed)`` and sentence counts);
    * ``labeled``: documents per split, labeled vs held out, rejected duplicate ids, dev/test
      documents that duplicate a train document (reported, not removed);
    * ``splits``: per output split documents, sentences, entities per type (sentence level) and
      spans dropped by splitting; ``sentences`` (in ``to_dict``): sentences per split;
    * ``dedup``: parameters and totals (exact / near / leakage / train_duplicate / empty,
      leakage_sentence / exact_sentence);
    * ``paths``: the shard files per split.
    """

    out_dir: str
    data: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    labeled: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    dedup: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "data": self.data,
            "inputs": self.inputs,
            "labeled": self.labeled,
            "splits": self.splits,
            "sentences": {name: info["sentences"] for name, info in self.splits.items()},
            "dedup": self.dedup,
            "paths": self.paths,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def write(self, path: str | Path) -> Path:
        """Write as JSON atomically (a reader never sees half a report)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path


def _entities(sentences: Iterable[Sentence]) -> dict[str, int]:
    counts = Counter(s.type for sent in sentences for s in sent.spans)
    out = dict(sorted(counts.items()))
    out["total"] = sum(counts.values())
    return out


def _reader_dict(report: ReadReport) -> dict[str, Any]:
    return report.to_dict(max_issues=MAX_ISSUES)


# ----------------------------------------------------------------------------------------------
# Labeled inputs
# ----------------------------------------------------------------------------------------------


def _validated_demo(docs: Iterable[Document], report: ReadReport, overlap_policy: str,
                    types: set[str] | None) -> Iterator[Document]:
    """Run generated documents through the readers' validation and accounting."""
    for k, doc in enumerate(docs, 1):
        builder = RecordBuilder(report, path="demo", line=k, overlap_policy=overlap_policy,
                                types=types)
        for s in doc.spans:
            builder.add_span(RawSpan(s.start, s.end, s.type, doc.mention(s), "demo", k,
                                     f"{s.type} [{s.start}, {s.end})"))
        built = builder.build(doc.id, doc.text, source=doc.source, meta=doc.meta)
        if built is not None:
            yield built


def _claim_ids(docs: Iterable[Document], seen: set[str], entry: dict[str, Any]) -> list[Document]:
    """Keep documents whose id is new across the labeled inputs; count the others."""
    out = []
    rejected = Counter()
    for doc in docs:
        if doc.id in seen:
            rejected[DUPLICATE_ID] += 1
            continue
        seen.add(doc.id)
        out.append(doc)
    entry["documents"] = len(out) + sum(rejected.values())
    entry["used"] = len(out)
    entry["rejected_by_prepare"] = dict(rejected)
    return out


def _read_labeled(role: str, fmt: str, path: str, d: DataConfig, seen: set[str]
                  ) -> tuple[list[Document], dict[str, Any]]:
    fmt, how = resolve_format(fmt, path, labeled=True)
    report = ReadReport(max_issues=MAX_ISSUES)
    docs = read_documents(fmt, path, report=report, overlap_policy=d.overlap_policy,
                          types=set(d.types) if d.types else None)
    entry: dict[str, Any] = {"role": role, "format": fmt, "detected": how, "path": path}
    kept = _claim_ids(progress(docs, desc=f"prepare: reading data.{role}", unit="doc"), seen, entry)
    check_rejections(report, f"data.{role} {path}", d.max_rejected, d.strict)
    entry["reader"] = _reader_dict(report)
    return kept, entry


def _labeled_inputs(d: DataConfig, seen: set[str]) -> tuple[
        list[Document], list[Document] | None, list[Document] | None, list[dict[str, Any]], Any]:
    """``(pool, dev or None, test or None, input entries, demo corpus or None)``; the pool is
    what dev/test are carved from when no dev/test path is given."""
    inputs = []
    if d.format == "demo":
        if d.train or d.dev or d.test:
            raise ConfigError("data.format=demo uses the built-in corpus: "
                              "leave data.train, data.dev and data.test unset")
        from cemr.demo import generate_demo

        demo = generate_demo(d.demo_documents, d.demo_unlabeled, d.demo_seed)
        report = ReadReport(max_issues=MAX_ISSUES)
        docs = _validated_demo(demo.labeled, report, d.overlap_policy,
                               set(d.types) if d.types else None)
        entry: dict[str, Any] = {"role": "train", "format": "demo", "path": None,
                                 "demo": {"documents": d.demo_documents,
                                          "unlabeled": d.demo_unlabeled, "seed": d.demo_seed}}
        pool = _claim_ids(progress(docs, desc="prepare: reading the demo corpus", unit="doc"), seen, entry)
        check_rejections(report, "data.train (demo)", d.max_rejected, d.strict)
        entry["reader"] = _reader_dict(report)
        return pool, None, None, [entry], demo
    if d.format != AUTO and d.format not in LABELED_FORMATS:
        raise ConfigError(f"data.format={d.format!r} is not a labeled format "
                          f"({', '.join(['demo', AUTO, *LABELED_FORMATS])})")
    pool, entry = _read_labeled("train", d.format, expand_path(d.train), d, seen)
    inputs.append(entry)
    dev = test = None
    if d.dev:
        dev, entry = _read_labeled("dev", d.format, expand_path(d.dev), d, seen)
        inputs.append(entry)
    if d.test:
        test, entry = _read_labeled("test", d.format, expand_path(d.test), d, seen)
        inputs.append(entry)
    return pool, dev, test, inputs, None


# ----------------------------------------------------------------------------------------------
# Unlabeled inputs
# ----------------------------------------------------------------------------------------------


def _unlabeled_stream(src: UnlabeledSource, report: ReadReport, d: DataConfig
                      ) -> Iterator[Document]:
    path = expand_path(src.path)
    if not path:
        raise ConfigError("data.unlabeled[].path is empty")
    if src.format not in INPUT_FORMATS:
        raise ConfigError(f"data.unlabeled format {src.format!r} unknown "
                          f"({', '.join(INPUT_FORMATS)})")
    fmt, _ = resolve_format(src.format, path, labeled=False)
    if fmt == "text":
        return read_unlabeled(path, column=src.column, per_line=src.per_line, limit=src.limit,
                              report=report)
    docs = read_documents(fmt, path, report=report, overlap_policy=d.overlap_policy)
    return itertools.islice(docs, src.limit) if src.limit is not None else docs


class _Pool:
    """The unlabeled pool being written: document dedup, sentence dedup, both shard writers."""

    def __init__(self, deduper: Deduper, reference_sentences: set[bytes], unlabeled: ShardWriter,
                 heldout: ShardWriter, max_len: int, sentence_dedup: bool):
        self.deduper = deduper
        self.sentence_dedup = sentence_dedup
        self.reference_sentences = reference_sentences
        self.seen_sentences: set[bytes] = set()
        self.unlabeled = unlabeled
        self.heldout = heldout
        self.max_len = max_len
        self.heldout_stats = SplitStats()
        self.heldout_entities: Counter = Counter()
        self.heldout_docs: set[str] = set()

    def admit(self, doc: Document, source: str, entry: dict[str, Any]) -> bool:
        """Dedup one document, then write its new sentences; counts go to ``entry``."""
        kept, reason, _ = self.deduper.add(doc.id, doc.text)
        if not kept:
            entry["removed"][reason] += 1
            return False
        entry["kept"] += 1
        gold = source == HELDOUT
        stats = self.heldout_stats if gold else None
        # pool text is cut as unseen text is; held-out gold is mapped onto those sentences
        sentences = split_document(doc if gold else Document(doc.id, doc.text), self.max_len,
                                   stats, guided=False)
        entry["sentences"] += len(sentences)
        for sent in sentences:
            key = text_digest(normalize(sent.text))
            if key in self.reference_sentences:
                entry["sentences_removed"][LEAKAGE_SENTENCE] += 1
                continue
            if self.sentence_dedup:
                if key in self.seen_sentences:
                    entry["sentences_removed"][EXACT_SENTENCE] += 1
                    continue
                self.seen_sentences.add(key)
            entry["sentences_written"] += 1
            self.unlabeled.write(Sentence(sent.doc_id, sent.sent_id, sent.offset, sent.text, []),
                                 source)
            if gold:
                self.heldout.write(sent, HELDOUT_GOLD)
                self.heldout_docs.add(sent.doc_id)
                self.heldout_entities.update(s.type for s in sent.spans)
        return True


def _pool_entry(role: str, tag: str, **info: Any) -> dict[str, Any]:
    return {"role": role, "tag": tag, **info, "documents": 0, "kept": 0, "removed": Counter(),
            "sentences": 0, "sentences_written": 0, "sentences_removed": Counter()}


def _finish_entry(entry: dict[str, Any]) -> None:
    removed = entry["removed"]
    if entry["documents"] != entry["kept"] + sum(removed.values()):
        raise AssertionError(f"unlabeled accounting broken for {entry.get('path')}: {entry}")
    entry["removed"] = dict(sorted(removed.items()))
    entry["sentences_removed"] = dict(sorted(entry["sentences_removed"].items()))


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------


def _write_gold(docs: list[Document], out: Path, rows: int, max_len: int, guided: bool
                ) -> tuple[dict[str, Any], list[Sentence], list[Path]]:
    """One gold split's shards; ``guided``: cuts protected by the gold spans (train only)."""
    stats = SplitStats()
    sentences: list[Sentence] = []
    with ShardWriter(out, rows_per_shard=rows, overwrite=True) as writer:
        for doc in progress(docs, desc=f"prepare: writing {out.name}", unit="doc"):
            for sent in split_document(doc, max_len, stats, guided=guided):
                writer.write(sent, GOLD)
                sentences.append(sent)
    info = {
        "documents": len(docs),
        "sentences": len(sentences),
        "entities": _entities(sentences),
        ("spans_dropped_by_split" if guided else "spans_crossing_split"): stats.spans_dropped,
    }
    return info, sentences, writer.paths


@dataclass
class _LabeledSplit:
    """The labeled documents per role, after the split and the labeled_fraction rule."""

    documents: int
    train_all: list[Document]
    train: list[Document]
    heldout: list[Document]
    dev: list[Document]
    test: list[Document]


def _split_labeled(d: DataConfig, fmt: str, pool: list[Document], dev: list[Document] | None,
                   test: list[Document] | None, documents: int) -> _LabeledSplit:
    """The split of the labeled documents read in format ``fmt`` (it decides the records)."""
    try:
        split = assign_splits([x.id for x in pool], 0.0 if dev is not None else d.dev_fraction,
                              0.0 if test is not None else d.test_fraction, d.split_seed, record_key(fmt))
    except ValueError as exc:
        raise ConfigError(f"data split: {exc}") from None
    train_all = [x for x in pool if split[x.id] == "train"]
    if not train_all:
        raise ConfigError("no labeled training document (check data.train and its report)")
    labeled, _ = choose_labeled([x.id for x in train_all], d.labeled_fraction, d.split_seed, record_key(fmt))
    return _LabeledSplit(
        documents=documents,
        train_all=train_all,
        train=[x for x in train_all if x.id in labeled],
        heldout=[x for x in train_all if x.id not in labeled],
        dev=dev if dev is not None else [x for x in pool if split[x.id] == "dev"],
        test=test if test is not None else [x for x in pool if split[x.id] == "test"],
    )


def _references(ls: _LabeledSplit, threshold: float, gold_sentences: Iterable[Sentence]
                ) -> tuple[Deduper, set[bytes], int]:
    """The pool's deduper seeded with dev/test (leakage) and labeled train documents, the
    digests of the dev/test sentences, and how many dev/test documents duplicate a train one."""
    evaluation = [*ls.dev, *ls.test]
    deduper = Deduper(threshold=threshold)
    with progress(total=2 * len(evaluation) + len(ls.train) + len(ls.train_all), desc="prepare: dedup index",
                  unit="doc") as bar:
        def counted(docs: Iterable[Document]) -> Iterator[Document]:
            for x in docs:
                yield x
                bar.update(1)

        deduper.seed(((("dev/test", x.id), x.text) for x in counted(evaluation)), reason=LEAKAGE)
        deduper.seed(((("train", x.id), x.text) for x in counted(ls.train)), reason=TRAIN_DUPLICATE)
        train_index = Deduper(threshold=threshold)
        train_index.seed(((x.id, x.text) for x in counted(ls.train_all)), reason=TRAIN_DUPLICATE)
        cross = sum(not train_index.check(x.text).kept for x in counted(evaluation))
    digests = {text_digest(normalize(s.text)) for s in gold_sentences}
    digests.discard(text_digest(""))
    return deduper, digests, cross


def _open_unlabeled(d: DataConfig, demo: Any) -> list[tuple[dict[str, Any], ReadReport | None,
                                                            Iterable[Document]]]:
    """``(report entry, reader report, documents)`` per unlabeled input; paths checked now."""
    streams: list[tuple[dict[str, Any], ReadReport | None, Iterable[Document]]] = []
    if demo is not None:
        streams.append((_pool_entry("unlabeled", "demo", format="demo", path=None), None,
                        demo.unlabeled))
    for i, src in enumerate(d.unlabeled):
        rep = ReadReport(max_issues=MAX_ISSUES)
        entry = _pool_entry("unlabeled", f"u{i}", format=src.format, path=expand_path(src.path))
        streams.append((entry, rep, _unlabeled_stream(src, rep, d)))
    return streams


def _fill_pool(pool: _Pool, heldout: list[Document], streams, cap: int | None
               ) -> list[dict[str, Any]]:
    """Admit the held-out documents, then every unlabeled input (up to ``cap`` kept); a progress bar
    counts the documents read."""
    with progress(desc="prepare: unlabeled pool", unit="doc") as bar:
        entry = _pool_entry("heldout", HELDOUT, path=None)
        for doc in heldout:
            entry["documents"] += 1
            bar.update(1)
            pool.admit(doc, HELDOUT, entry)
        _finish_entry(entry)
        entries = [entry]
        kept = 0
        for entry, rep, docs in streams:
            if cap is not None and kept >= cap:
                entry["skipped"] = f"data.max_unlabeled={cap} reached before this input"
            else:
                tag = entry["tag"]
                bar.set_postfix(input=entry.get("path") or tag, refresh=False)
                for doc in docs:
                    entry["documents"] += 1
                    bar.update(1)
                    renamed = Document(f"{tag}:{doc.id}", doc.text, [], doc.source, doc.meta)
                    if pool.admit(renamed, tag, entry):
                        kept += 1
                        if cap is not None and kept >= cap:
                            entry["stopped"] = f"data.max_unlabeled={cap} reached: reading stopped"
                            break
            if rep is not None:
                entry["reader"] = _reader_dict(rep)
            _finish_entry(entry)
            entries.append(entry)
    return entries


def prepare(cfg: Config, out_dir: str | Path, *, dedup_threshold: float | None = None,
            sentence_dedup: bool = True, rows_per_shard: int | None = None) -> PrepareReport:
    """Read, split, deduplicate and write the data of ``cfg.data`` (see the module docstring).

    ``dedup_threshold``: Jaccard threshold of near-duplicate documents (default
    ``data.dedup_threshold``); ``sentence_dedup``:
    also drop unlabeled sentences equal to an earlier pool sentence (on CCKS2017 this halves the
    pool: EMR sentences repeat a lot); ``rows_per_shard`` defaults to
    ``cfg.cluster.rows_per_shard``. Re-running replaces the shards of ``out_dir``. Returns the
    report (also written to ``out_dir/prepare_report.json``).
    """
    t0 = time.perf_counter()
    d = cfg.data
    if dedup_threshold is None:
        dedup_threshold = float(d.dedup_threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_NAME).unlink(missing_ok=True)
    rows = rows_per_shard or cfg.cluster.rows_per_shard
    report = PrepareReport(out_dir=str(out), data=to_dict(d))

    # 1. read the labeled inputs, open the unlabeled ones (fail before writing), split
    pool_docs, dev_docs, test_docs, inputs, demo = _labeled_inputs(d, set())
    report.inputs.extend(inputs)
    streams = _open_unlabeled(d, demo)
    ls = _split_labeled(d, inputs[0]["format"], pool_docs, dev_docs, test_docs,
                        sum(e["used"] for e in inputs))

    # 2. the gold splits
    gold_sentences: list[Sentence] = []
    for name, docs in (("train", ls.train), ("dev", ls.dev), ("test", ls.test)):
        info, sents, paths = _write_gold(docs, out / name, rows, d.max_sentence_len, guided=name == "train")
        report.splits[name] = info
        report.paths[name] = [str(p) for p in paths]
        if name != "train" and docs:  # scored on whole documents: every gold span, cut or not
            info["entities_in_documents"] = sum(len(doc.spans) for doc in docs)
            report.paths[f"{name}_documents"] = [str(write_jsonl(docs, out / DOCUMENTS_DIR / f"{name}.jsonl"))]
        if name != "train":
            gold_sentences.extend(sents)

    # 3. the unlabeled pool, deduplicated against itself, dev/test and train
    deduper, reference_sentences, cross = _references(ls, dedup_threshold, gold_sentences)
    with ShardWriter(out / "unlabeled", rows_per_shard=rows, overwrite=True) as uw, \
            ShardWriter(out / "heldout", rows_per_shard=rows, overwrite=True) as hw:
        pool = _Pool(deduper, reference_sentences, uw, hw, d.max_sentence_len, sentence_dedup)
        entries = _fill_pool(pool, ls.heldout, streams, d.max_unlabeled)
    report.inputs.extend(entries)
    report.paths["unlabeled"] = [str(p) for p in uw.paths]
    report.paths["heldout"] = [str(p) for p in hw.paths]

    # 4. totals
    docs_removed, sents_removed = Counter(), Counter()
    for e in entries:
        docs_removed.update(e["removed"])
        sents_removed.update(e["sentences_removed"])
    report.splits["unlabeled"] = {
        "documents": sum(e["kept"] for e in entries),
        "sentences": uw.rows,
        "sentences_by_source": {e["tag"]: e["sentences_written"] for e in entries},
    }
    report.splits["heldout"] = {
        "documents": len(pool.heldout_docs),
        "sentences": hw.rows,
        "entities": {**dict(sorted(pool.heldout_entities.items())),
                     "total": sum(pool.heldout_entities.values())},
        "spans_crossing_split": pool.heldout_stats.spans_dropped,
    }
    report.labeled = {
        "documents": ls.documents,
        "train": len(ls.train_all),
        "train_labeled": len(ls.train),
        "train_heldout": len(ls.heldout),
        "dev": len(ls.dev),
        "test": len(ls.test),
        "split_rule": "rank by blake2b(f'{split_seed}:split:{doc_id}'), then "
                      "blake2b(f'{split_seed}:labeled:{doc_id}') for labeled_fraction",
        "dev_test_documents_duplicating_train": cross,
    }
    report.dedup = {
        "threshold": dedup_threshold,
        "sentence_dedup": sentence_dedup,
        "ngram": deduper.ngram,
        "num_perm": deduper.hasher.num_perm,
        "bands": deduper.bands,
        "rows": deduper.rows,
        "references": deduper.counts["references"],
        "documents_removed": dict(sorted(docs_removed.items())),
        "sentences_removed": dict(sorted(sents_removed.items())),
    }
    report.elapsed_s = time.perf_counter() - t0
    report.write(out / REPORT_NAME)
    return report
