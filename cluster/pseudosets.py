"""Pseudo-label sets on disk: the shard directories a pseudo-labeling round writes
(:mod:`cluster.pseudolabel`), read and combined with pyarrow a record batch at a time (only keys
are held in memory).

- :func:`entity_counts`: entities per type of a set (of the rows of one status);
- :func:`merge_pseudo_dirs`: the training set of ``selftrain.mode: accumulate`` (every round's kept
  sentences, a sentence labeled as the first round that kept it);
- :func:`score_against_heldout`: precision / recall of a kept set against ``data/heldout``, in
  all and per type;
- :func:`type_share_of`: the gold type distribution the class-balance cap follows;
- :func:`pseudo_samples` / :func:`pseudo_page`: a few kept sentences, raw text included, as dicts
  or as the HTML view (logged only with ``tracking.log_samples: true``).
"""
from __future__ import annotations

import os
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow.parquet as pq

from cemr.corpus.document import Document, Span
from cemr.corpus.shards import UNSURE_FIELD, ShardWriter, count_rows, iter_records, iter_sentences, shard_files
from cemr.metrics import PRF, match_counts
from cemr.selection import KEPT
from cemr.selftrain import score_pseudo_labels, sentence_key

SAMPLE_SENTENCES = 20  # kept sentences per round logged with tracking.log_samples


def entity_counts(directory: str | os.PathLike, status: str | None = KEPT) -> dict[str, int]:
    """Entities per type in a pseudo-labeling output directory (rows of ``status``; all rows when
    None)."""
    counts: Counter = Counter()
    for file in shard_files(directory):
        pf = pq.ParquetFile(file)
        cols = ["spans"] + (["status"] if status is not None and "status" in pf.schema_arrow.names else [])
        for batch in pf.iter_batches(columns=cols, batch_size=4096):
            spans = batch.column("spans").to_pylist()
            statuses = batch.column("status").to_pylist() if "status" in cols else [status] * len(spans)
            for st, cell in zip(statuses, spans):
                if status is None or st == status:
                    counts.update(sp["type"] for sp in cell or ())
    return dict(sorted(counts.items()))


def merge_pseudo_dirs(dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                      rows_per_shard: int = 2000) -> int:
    """Union of kept sets (oldest first) into ``out_dir``: a sentence keeps the labels (and unsure
    ranges) of the first round that kept it (``selftrain.mode: accumulate``). Returns the rows
    written."""
    seen: set[tuple[str, int]] = set()
    with ShardWriter(out_dir, rows_per_shard=rows_per_shard, overwrite=True,
                     extra_fields=[UNSURE_FIELD]) as writer:
        for d in dirs:
            for sent, extra in iter_records(d):  # sent.unsure read from partial pseudo-labels
                key = sentence_key(sent.doc_id, sent.sent_id)
                if key in seen:
                    continue
                seen.add(key)
                writer.write(sent, extra["source"])
    return len(seen)


def score_against_heldout(kept_dir: str | os.PathLike, heldout_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Precision / recall / F1 (and tp / fp / fn, the sentences scored) of a kept set against the
    hidden gold of ``data/heldout``, and ``per_type``: ``{type: {precision, recall, f1, tp, fp,
    fn}}`` for every type of the gold or the kept labels of the scored sentences (the micro figures
    are :func:`cemr.selftrain.score_pseudo_labels`'s). None when there is no held-out gold."""
    if not Path(heldout_dir).exists() or count_rows(heldout_dir) == 0:
        return None
    gold: dict[tuple[str, int], list[Span]] = {
        sentence_key(s.doc_id, s.sent_id): s.spans for s in iter_sentences(heldout_dir)}
    kept = {}
    for s in iter_sentences(kept_dir):
        key = sentence_key(s.doc_id, s.sent_id)
        if key in gold:
            kept[key] = s.spans
    prf = score_pseudo_labels(kept, gold)
    counts: dict[str, list[int]] = {}
    for key, gold_spans in gold.items():
        for t, tp_fp_fn in match_counts(gold_spans, kept.get(key, ())).items():
            counts[t] = [a + b for a, b in zip(counts.get(t, [0, 0, 0]), tp_fp_fn)]
    per_type = {}
    for t, (tp, fp, fn) in sorted(counts.items()):
        one = PRF.from_counts(tp, fp, fn)
        per_type[t] = {"precision": one.precision, "recall": one.recall, "f1": one.f1, "tp": tp, "fp": fp, "fn": fn}
    return {"precision": prf.precision, "recall": prf.recall, "f1": prf.f1, "tp": prf.tp, "fp": prf.fp,
            "fn": prf.fn, "scored_sentences": len(gold), "kept_scored_sentences": len(kept), "per_type": per_type}


def type_share_of(sentences: Iterable[Any]) -> dict[str, float]:
    """Entities per type of the gold sentences (the class-balance target)."""
    counts: Counter = Counter(sp.type for s in sentences for sp in s.spans)
    return {t: float(n) for t, n in sorted(counts.items())}


def pseudo_samples(kept_dir: str | os.PathLike, n: int = SAMPLE_SENTENCES) -> list[dict[str, Any]]:
    """The first ``n`` sentences of a kept set (file order) as dicts: ``doc_id``, ``sent_id``,
    ``offset``, ``text`` (raw EMR text), ``spans`` and, for partial labels, ``unsure``."""
    return [s.to_dict() for s in islice(iter_sentences(kept_dir), max(0, n))]


def pseudo_page(kept_dir: str | os.PathLike, threshold: float, title: str, n: int = SAMPLE_SENTENCES) -> str:
    """The HTML view (:func:`cemr.review.html.render_html`) of the first ``n`` sentences of a kept
    set (file order, those of :func:`pseudo_samples`): each with every entity its model predicted
    and the confidence of each (the ``predictions`` column of a pseudo-labeling output), those
    below ``threshold`` (dropped in ``entity`` / ``partial`` selection) outlined. Raw EMR text.
    ``ValueError`` when the shards have no ``predictions`` column (not a pseudo-labeling output)."""
    from cemr.review.html import render_html

    rows: list[dict[str, Any]] = []
    for file in shard_files(kept_dir):
        if len(rows) >= n:
            break
        pf = pq.ParquetFile(file)
        if "predictions" not in pf.schema_arrow.names:
            raise ValueError(f"{file}: no 'predictions' column: not the output of a pseudo-labeling round")
        for batch in pf.iter_batches(columns=["doc_id", "sent_id", "text", "predictions"], batch_size=max(1, n)):
            rows += batch.to_pylist()[: n - len(rows)]
            if len(rows) >= n:
                break
    tagged = [(Document(f"{r['doc_id']} #{r['sent_id']}", r["text"]), list(r["predictions"] or ())) for r in rows]
    types = sorted({p["type"] for _doc, preds in tagged for p in preds})
    return render_html(tagged, types, low_confidence=float(threshold), title=title)
