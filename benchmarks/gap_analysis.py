r"""Why dev F1 over-promises on unseen records (issue #18): how similar evaluation text is to training
text, and where a model's errors are.

    CEMR_DATA_DIR=../shared/data python benchmarks/gap_analysis.py --data-only \
        --config ray_configs/experiments/ccks2017.yaml [--threshold 0.8] [--split-seeds 1 2 3 ...] \
        [--block N] [--heldout PATH --heldout-format FMT] [--pool] [--keep DIR] [key=value ...]
    python benchmarks/gap_analysis.py --model MODEL_DIR --data DOCS [--format auto] \
        [--train RUN_DIR | --train PATH --train-format FMT] [--device cpu]

``--data-only`` (no model): the config is prepared into a temporary run directory exactly as ``cemr
prepare`` does (:func:`cemr.pipeline.prepare_data`, with ``data.labeled_fraction=1`` and, unless
``--pool``, ``data.unlabeled=[]``: the dev/test split depends on neither), and the carved split is checked against
:func:`cemr.prepare.assign_splits`. Then, for each evaluation set against its training reference:

- **sentences**: the share of evaluation sentences (cut as unseen text is) with an exact
  (normalised) or a near duplicate (Jaccard of char 5-grams >= ``--threshold``) among the
  reference's sentences, also weighted by characters, and the share of gold mentions inside such
  sentences (a mention in a copied sentence is all but given);
- **mentions**: the share of gold mentions whose string is a mention of the reference, as the same
  type or another, and the share of distinct (type, string) pairs never seen;

per CCKS2017 section and in all. The evaluation sets: the carved **dev** and **test** against
**train** (the config's ``data.split_seed``); **last records** (``--block N``, default the test
size): the last N records in natural id order (CCKS2017 records 217-240: the official test set is
records 241-300) against as many records as train has, ranked from the others by the same hash rule;
and ``--heldout PATH`` (an official test set, when you have one: not public here) against every
labeled record. ``--split-seeds`` repeats the dev/test figures over other split seeds (the same
hash rule): how much they move with the split alone. Also:

- **templated sentences**: the share of train sentences whose normalised text occurs in another
  train record, per section;
- **dictionary feature** (when the config has a lexicon): the lexicon is built as training builds it
  (:func:`cemr.lexicon.build_folded_lexicon`); train sentences are matched out of fold, dev/test
  sentences against the full lexicon (all train mentions), as the tagger's collator does; per side,
  the share of gold mentions that are terms (as their type) and the BMM words' recall / precision
  against gold: a gap between train and dev/test is a feature that behaves differently on unseen
  records;
- ``--pool``: the share of dev/test sentences with a duplicate in the prepared unlabeled pool
  (pretraining and self-training read it).

``--model``: the predictions of a saved model (:meth:`cemr.predictor.Predictor.predict_documents`)
on ``--data`` scored into error categories (:mod:`cemr.analysis`: exact, type, boundary,
boundary+type, missed, spurious) overall, by type, by sentence length, by CCKS2017 section, by
seen / unseen mention string (``--train``: a run directory, whose ``data/train`` is read, or a
labeled corpus) and by lexicon membership (the model's own lexicon: external lists plus every
training mention).

Readable tables first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from cemr.analysis import (
    BOUNDARY,
    BOUNDARY_TYPE,
    EXACT,
    MISSED,
    SPURIOUS,
    TYPE_ERROR,
    MentionIndex,
    SentenceIndex,
    SentenceLocator,
    Tally,
    breakdown,
    bucket_order,
    categorize,
    dictionary_agreement,
    lexicon_key,
    mention_seen,
    natural_key,
    section_key,
    section_of,
    sentence_overlap,
    tally,
    type_key,
)
from cemr.textwidth import LEFT, RIGHT, format_table

ALL = "all"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


# ----------------------------------------------------------------------------------------------
# --data-only
# ----------------------------------------------------------------------------------------------


class Corpus:
    """The labeled documents of a prepared run: every document (train ones rebuilt from their
    sentences), its sentences as prepared, its record, and the split prepare gave it."""

    def __init__(self, layout, fmt: str):
        from cemr.pipeline import load_documents, load_sentences, sentences_to_documents
        from cemr.prepare import record_key

        self.fmt = fmt
        key = record_key(fmt)
        self.record: Callable[[str], str] = key or (lambda doc_id: doc_id)
        self.docs: dict[str, Any] = {}
        self.sentences: dict[str, list] = defaultdict(list)
        self.role: dict[str, str] = {}
        train = load_sentences(layout, "train")
        for d in sentences_to_documents(train):
            self.docs[d.id] = d
        for name in ("dev", "test"):
            for d in load_documents(layout, name):
                self.docs[d.id] = d
                self.role[d.id] = name
            for s in load_sentences(layout, name):
                self.sentences[s.doc_id].append(s)
        for s in train:
            self.sentences[s.doc_id].append(s)
            self.role[s.doc_id] = "train"
        for sents in self.sentences.values():
            sents.sort(key=lambda s: s.sent_id)

    def records(self, role: str | None = None) -> list[str]:
        """Record ids (of a role), in natural order."""
        return sorted({self.record(i) for i, r in self.role.items() if role is None or r == role}, key=natural_key)

    def docs_of(self, records: Iterable[str]) -> list:
        wanted = set(records)
        return [d for i, d in sorted(self.docs.items()) if self.record(i) in wanted]


def group_of(fmt: str) -> Callable[[str], str]:
    """Doc id -> section (CCKS2017) or ``all``."""
    return section_of if fmt == "ccks2017" else (lambda doc_id: ALL)


def similarity(eval_docs: list, eval_sents: list, ref_sents: list, ref_docs: list, threshold: float,
               group: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """``{group: {"sentences": Overlap dict, "mentions": Seen dict}}`` of one evaluation set against
    its reference, with an ``all`` row."""
    index = SentenceIndex(threshold=threshold)
    for s in ref_sents:
        index.add((s.doc_id, s.sent_id), s.text)
    mentions = MentionIndex(ref_docs)
    out: dict[str, dict[str, Any]] = {}
    for fn in (group, lambda doc_id: ALL):  # the groups, then all of them
        ov = sentence_overlap(eval_sents, index, lambda s, fn=fn: fn(s.doc_id))
        seen = mention_seen(eval_docs, mentions, lambda d, fn=fn: fn(d.id))
        for g in sorted(set(ov) | set(seen)):
            out[g] = {"sentences": ov[g].to_dict() if g in ov else None,
                      "mentions": seen[g].to_dict() if g in seen else None}
    return out


def templated(corpus: Corpus, group: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """Share of train sentences whose normalised text occurs in another train record, per group."""
    from cemr.corpus.dedup import normalize, text_digest

    records_of: dict[bytes, set[str]] = defaultdict(set)
    rows = []
    for doc_id, sents in corpus.sentences.items():
        if corpus.role[doc_id] != "train":
            continue
        for s in sents:
            norm = normalize(s.text)
            if norm:
                key = text_digest(norm)
                records_of[key].add(corpus.record(doc_id))
                rows.append((group(doc_id), key, corpus.record(doc_id), len(s.text)))
    acc: dict[str, Counter] = defaultdict(Counter)
    for g, key, rec, n in rows:
        shared = len(records_of[key] - {rec}) > 0
        for k in (g, ALL):
            acc[k]["sentences"] += 1
            acc[k]["shared"] += shared
            acc[k]["chars"] += n
            acc[k]["shared_chars"] += n * shared
    return {g: {"sentences": c["sentences"], "in_another_record_share": c["shared"] / c["sentences"],
                "char_share": c["shared_chars"] / c["chars"] if c["chars"] else 0.0}
            for g, c in sorted(acc.items(), key=lambda kv: (kv[0] == ALL, kv[0]))}


def sentences_of(docs: list, corpus: Corpus | None = None, max_len: int = 200) -> list:
    """The sentences of documents: as prepared when they are in ``corpus``, else cut as unseen text is."""
    from cemr.corpus.document import Document
    from cemr.corpus.sentences import split_document

    out = []
    for d in docs:
        if corpus is not None and d.id in corpus.sentences:
            out.extend(corpus.sentences[d.id])
        else:
            out.extend(split_document(Document(d.id, d.text), max_len, guided=False))
    return out


def split_roles(corpus: Corpus, cfg, seed: int) -> dict[str, str]:
    """The carved split of ``seed`` by prepare's rule (:func:`cemr.prepare.assign_splits`)."""
    from cemr.prepare import assign_splits, record_key

    return assign_splits(sorted(corpus.docs), cfg.data.dev_fraction, cfg.data.test_fraction, seed,
                         record_key(corpus.fmt))


def block_split(corpus: Corpus, n_block: int, n_ref: int, seed: int) -> tuple[list[str], list[str]]:
    """``(last n_block records in natural order, n_ref of the others ranked by the split hash)``."""
    from cemr.prepare import ranked

    records = corpus.records()
    if n_block < 1 or n_block + n_ref > len(records):
        raise SystemExit(f"--block {n_block}: needs 1..{len(records) - n_ref} records "
                         f"({len(records)} records, {n_ref} for the reference)")
    block = records[-n_block:]
    ref = ranked(records[:-n_block], seed, "split")[:n_ref]
    return block, ref


def block_sweep(corpus: Corpus, n_block: int, seed: int, threshold: float) -> list[dict[str, Any]]:
    """Every contiguous block of ``n_block`` records (natural id order) against as many other records
    as train has (ranked by the split hash): are records with near ids alike?"""
    from cemr.prepare import ranked

    records = corpus.records()
    n_ref = len(corpus.records("train"))
    rows = []
    for k in range(0, len(records) - n_block + 1, n_block):
        block = records[k:k + n_block]
        others = records[:k] + records[k + n_block:]
        ref = ranked(others, seed, "split")[:n_ref]
        bdocs, rdocs = corpus.docs_of(block), corpus.docs_of(ref)
        sim = similarity(bdocs, sentences_of(bdocs, corpus), sentences_of(rdocs, corpus), rdocs, threshold,
                         lambda i: ALL)[ALL]
        rows.append({"records": f"{block[0]}..{block[-1]}", "sentences": sim["sentences"]["sentences"],
                     "dup": sim["sentences"]["exact_or_near_share"],
                     "dup_mentions": sim["sentences"]["exact_or_near_mention_share"],
                     "seen": sim["mentions"]["seen_same_type_share"],
                     "distinct_unseen": sim["mentions"]["distinct_unseen_share"]})
    return rows


def seed_sweep(corpus: Corpus, cfg, seeds: list[int], threshold: float) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        roles = split_roles(corpus, cfg, seed)
        train = [d for i, d in sorted(corpus.docs.items()) if roles[i] == "train"]
        train_sents = sentences_of(train, corpus)
        row: dict[str, Any] = {"seed": seed}
        for name in ("dev", "test"):
            docs = [d for i, d in sorted(corpus.docs.items()) if roles[i] == name]
            sim = similarity(docs, sentences_of(docs, corpus), train_sents, train, threshold, lambda i: ALL)[ALL]
            row[f"{name}_dup"] = sim["sentences"]["exact_or_near_share"]
            row[f"{name}_seen"] = sim["mentions"]["seen_same_type_share"]
            row[f"{name}_distinct_unseen"] = sim["mentions"]["distinct_unseen_share"]
            row[f"{name}_dup_mentions"] = sim["sentences"]["exact_or_near_mention_share"]
        rows.append(row)
    return rows


def lexicon_agreement(cfg, corpus: Corpus, group: Callable[[str], str]) -> dict[str, Any] | None:
    """The dictionary feature on train (out of fold) vs dev/test (full lexicon) sentences."""
    from cemr.lexicon import build_folded_lexicon
    from cemr.pipeline import fold_group

    lc = cfg.lexicon
    if not (lc.preset or lc.sources or lc.include_train_mentions):
        return None
    train_docs = [d for i, d in sorted(corpus.docs.items()) if corpus.role[i] == "train"]
    lex = build_folded_lexicon(lc, train_docs, group=fold_group(corpus.fmt))
    out: dict[str, Any] = {"terms": len(lex.full), "folds": lex.k}
    for role in ("train", "dev", "test"):
        sents = [s for i, ss in sorted(corpus.sentences.items()) if corpus.role[i] == role for s in ss]
        if not sents:
            continue
        view = (lambda s: lex.for_doc(s.doc_id)) if role == "train" else (lambda s: lex.full)
        res = dictionary_agreement(sents, view, lambda s: group(s.doc_id))
        total = dictionary_agreement(sents, view)["all"]
        out[role] = {**{g: a.to_dict() for g, a in sorted(res.items()) if g != ALL}, ALL: total.to_dict()}
    return out


def pool_overlap(layout, corpus: Corpus, threshold: float, group: Callable[[str], str]) -> dict[str, Any]:
    from cemr.pipeline import load_sentences

    index = SentenceIndex(threshold=threshold)
    pool = load_sentences(layout, "unlabeled")
    for s in pool:
        index.add((s.doc_id, s.sent_id), s.text)
    out: dict[str, Any] = {"pool_sentences": len(pool)}
    for role in ("dev", "test"):
        sents = [s for i, ss in sorted(corpus.sentences.items()) if corpus.role[i] == role for s in ss]
        res = sentence_overlap(sents, index, lambda s: group(s.doc_id))
        out[role] = {**{g: o.to_dict() for g, o in sorted(res.items())},
                     ALL: sentence_overlap(sents, index)["all"].to_dict()}
    return out


def similarity_table(sets: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    header = ["set", "group", "sentences", "exact %", "exact+near %", "by chars %", "mentions",
              "in dup sentences %", "seen same type %", "seen any type %", "distinct unseen %"]
    rows: list[list[Any]] = [header]
    for name, groups in sets.items():
        for g, v in groups.items():
            s, m = v["sentences"] or {}, v["mentions"] or {}
            rows.append([name, g, s.get("sentences", 0), pct(s.get("exact_share", 0)),
                         pct(s.get("exact_or_near_share", 0)), pct(s.get("exact_or_near_char_share", 0)),
                         m.get("mentions", 0), pct(s.get("exact_or_near_mention_share", 0)),
                         pct(m.get("seen_same_type_share", 0)),
                         pct(m.get("seen_share", 0)), pct(m.get("distinct_unseen_share", 0))])
    return format_table(rows, [LEFT, LEFT] + [RIGHT] * (len(header) - 2), rule_after=(0,))


def data_only(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.config import expand_path, load_config
    from cemr.inference import read_labeled
    from cemr.pipeline import RunLayout, prepare_data

    # the dev/test split depends on neither the pool nor labeled_fraction: all gold train is the reference
    overrides = [*args.overrides, "data.labeled_fraction=1"]
    if not args.pool:
        overrides.append("data.unlabeled=[]")
    cfg = load_config(args.config, overrides)
    d = cfg.data
    if d.dev or d.test:
        raise SystemExit(f"{args.config}: data.dev / data.test are given: nothing is carved, "
                         "this analysis compares carved splits (use --heldout for a given set)")
    t0 = time.perf_counter()
    tmp = None
    if args.keep:
        run_dir = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gap_analysis_")
        run_dir = Path(tmp.name)
    layout = RunLayout.of(run_dir)
    report = prepare_data(cfg, layout, log=lambda m: print(m, file=sys.stderr))
    fmt = report["inputs"][0]["format"]
    corpus = Corpus(layout, fmt)
    expected = split_roles(corpus, cfg, d.split_seed)
    if expected != corpus.role:
        bad = sorted(i for i in expected if expected[i] != corpus.role.get(i))
        raise SystemExit(f"the prepared split differs from assign_splits at {len(bad)} document(s), "
                         f"e.g. {bad[:3]}")
    group = group_of(fmt)
    say(f"# {args.config}: {len(corpus.docs)} documents, {len(corpus.records())} records; split seed "
        f"{d.split_seed}: train {len(corpus.records('train'))} / dev {len(corpus.records('dev'))} / test "
        f"{len(corpus.records('test'))} records; near duplicate = Jaccard of char 5-grams >= {args.threshold}")

    train = [x for i, x in sorted(corpus.docs.items()) if corpus.role[i] == "train"]
    train_sents = sentences_of(train, corpus)
    sets: dict[str, dict[str, dict[str, Any]]] = {}
    for name in ("dev", "test"):
        docs = [x for i, x in sorted(corpus.docs.items()) if corpus.role[i] == name]
        sets[f"{name} vs train"] = similarity(docs, sentences_of(docs, corpus), train_sents, train,
                                              args.threshold, group)
    n_block = args.block if args.block is not None else len(corpus.records("test"))
    block_info = None
    if n_block:
        block, ref = block_split(corpus, n_block, len(corpus.records("train")), d.split_seed)
        bdocs, rdocs = corpus.docs_of(block), corpus.docs_of(ref)
        name = f"last {n_block} records vs {len(ref)} others"
        sets[name] = similarity(bdocs, sentences_of(bdocs, corpus), sentences_of(rdocs, corpus), rdocs,
                                args.threshold, group)
        block_info = {"records": [block[0], block[-1]], "reference_records": len(ref), "set": name}
    if args.heldout:
        fmt_h = args.heldout_format
        hdocs, _ = read_labeled(expand_path(args.heldout), fmt_h, max_rejected=d.max_rejected, strict=d.strict,
                                log=lambda m: print(m, file=sys.stderr))
        every = list(corpus.docs.values())
        sets["heldout vs all labeled"] = similarity(hdocs, sentences_of(hdocs, None, d.max_sentence_len),
                                                    sentences_of(every, corpus), every, args.threshold, group)
    say()
    say("## Evaluation text vs its training reference (sentences as tagged; mentions as (type, string))")
    for line in similarity_table(sets):
        say(line)

    say()
    say("## Templated text: train sentences whose normalised text occurs in another train record")
    tmpl = templated(corpus, group)
    rows: list[list[Any]] = [["group", "sentences", "in another record %", "by chars %"]]
    for g, v in tmpl.items():
        rows.append([g, v["sentences"], pct(v["in_another_record_share"]), pct(v["char_share"])])
    for line in format_table(rows, [LEFT, RIGHT, RIGHT, RIGHT], rule_after=(0,)):
        say(line)

    sweep = None
    if args.split_seeds:
        say()
        say("## The same figures for other split seeds (all sections)")
        sweep = seed_sweep(corpus, cfg, args.split_seeds, args.threshold)
        rows = [["split seed", "dev dup %", "test dup %", "dev - test", "dev mentions in dup %",
                 "test mentions in dup %", "dev - test", "dev seen %", "test seen %", "dev - test"]]
        for r in sweep:
            rows.append([r["seed"], pct(r["dev_dup"]), pct(r["test_dup"]), pct(r["dev_dup"] - r["test_dup"]),
                         pct(r["dev_dup_mentions"]), pct(r["test_dup_mentions"]),
                         pct(r["dev_dup_mentions"] - r["test_dup_mentions"]),
                         pct(r["dev_seen"]), pct(r["test_seen"]), pct(r["dev_seen"] - r["test_seen"])])
        for line in format_table(rows, [LEFT] + [RIGHT] * 9, rule_after=(0,)):
            say(line)
        if len(sweep) > 1:
            parts = []
            for key, label in (("seen", "seen same type"), ("dup", "duplicated sentences"),
                               ("dup_mentions", "mentions in duplicated sentences")):
                diffs = [r[f"dev_{key}"] - r[f"test_{key}"] for r in sweep]
                parts.append(f"{label} {pct(statistics.fmean(diffs))} ± {pct(statistics.stdev(diffs))}")
            say(f"dev - test over {len(sweep)} seeds, points: " + ", ".join(parts))

    blocks = None
    if args.block_sweep and n_block:
        say()
        say(f"## Every contiguous block of {n_block} records (natural id order) vs {len(corpus.records('train'))} "
            "other records: are records with near ids alike?")
        blocks = block_sweep(corpus, n_block, d.split_seed, args.threshold)
        rows = [["records", "sentences", "exact+near %", "mentions in dup sentences %", "seen same type %",
                 "distinct unseen %"]]
        for r in blocks:
            rows.append([r["records"], r["sentences"], pct(r["dup"]), pct(r["dup_mentions"]), pct(r["seen"]),
                         pct(r["distinct_unseen"])])
        for line in format_table(rows, [LEFT] + [RIGHT] * 5, rule_after=(0,)):
            say(line)
        measures = (("dup", "exact+near"), ("dup_mentions", "mentions in dup sentences"),
                    ("seen", "seen same type"), ("distinct_unseen", "distinct unseen"))
        if len(blocks) > 1:
            for key, label in measures:
                vals = [r[key] for r in blocks]
                say(f"{label}: blocks {pct(statistics.fmean(vals))} ± {pct(statistics.stdev(vals))}")
        if sweep and len(sweep) > 1:
            for key, label in measures:
                vals = [r[f"{split}_{key}"] for r in sweep for split in ("dev", "test")]
                say(f"{label}: random dev/test over the split seeds {pct(statistics.fmean(vals))} "
                    f"± {pct(statistics.stdev(vals))}")

    lex = lexicon_agreement(cfg, corpus, group)
    if lex is not None:
        say()
        say(f"## Dictionary feature: train sentences matched out of fold ({lex['folds']} folds), dev/test "
            f"against the full lexicon ({lex['terms']} terms)")
        rows = [["split", "group", "gold", "term %", "term as gold type %", "BMM words", "word recall %",
                 "word precision %", "bounds recall %"]]
        for role in ("train", "dev", "test"):
            for g, v in (lex.get(role) or {}).items():
                rows.append([role, g, v["gold"], pct(v["gold_term_share"]), pct(v["gold_term_type_share"]),
                             v["words"], pct(v["word_recall"]), pct(v["word_precision"]), pct(v["bounds_recall"])])
        for line in format_table(rows, [LEFT, LEFT] + [RIGHT] * 7, rule_after=(0,)):
            say(line)

    pool = None
    if args.pool:
        pool = pool_overlap(layout, corpus, args.threshold, group)
        say()
        say(f"## Dev/test sentences with a duplicate in the prepared unlabeled pool ({pool['pool_sentences']} sentences)")
        rows = [["split", "group", "sentences", "exact %", "exact+near %", "by chars %"]]
        for role in ("dev", "test"):
            for g, v in pool[role].items():
                rows.append([role, g, v["sentences"], pct(v["exact_share"]), pct(v["exact_or_near_share"]),
                             pct(v["exact_or_near_char_share"])])
        for line in format_table(rows, [LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT], rule_after=(0,)):
            say(line)
    elapsed = time.perf_counter() - t0
    if tmp is not None:
        tmp.cleanup()
    say()
    say(f"{elapsed:.1f} s")
    return {"config": args.config, "split_seed": d.split_seed, "threshold": args.threshold,
            "records": {r: len(corpus.records(r)) for r in ("train", "dev", "test")},
            "similarity": sets, "block": block_info, "templated": tmpl, "split_seeds": sweep, "blocks": blocks,
            "dictionary": lex, "pool": pool, "elapsed_s": round(elapsed, 1)}


# ----------------------------------------------------------------------------------------------
# --model
# ----------------------------------------------------------------------------------------------


TALLY_HEADER = ["group", "gold", "pred", "exact", "type", "boundary", "bound+type", "missed (ovl)",
                "spurious (ovl)", "P", "R", "F1"]


def tally_row(name: str, t: Tally) -> list[Any]:
    c, prf = t.counts, t.prf
    return [name, t.gold, t.pred, c[EXACT], c[TYPE_ERROR], c[BOUNDARY], c[BOUNDARY_TYPE],
            f"{c[MISSED]} ({t.overlapped[MISSED]})", f"{c[SPURIOUS]} ({t.overlapped[SPURIOUS]})",
            f"{prf.precision:.4f}", f"{prf.recall:.4f}", f"{prf.f1:.4f}"]


def tally_table(groups: dict[Any, Tally], order: Callable[[Any], Any] = str) -> list[str]:
    rows = [TALLY_HEADER] + [tally_row(str(g), groups[g]) for g in sorted(groups, key=order)]
    return format_table(rows, [LEFT] + [RIGHT] * (len(TALLY_HEADER) - 1), rule_after=(0,))


def training_documents(path: str, fmt: str) -> list:
    """Training documents for seen / unseen: a run directory's ``data/train`` or a labeled corpus."""
    from cemr.inference import read_labeled
    from cemr.pipeline import RunLayout, load_sentences, sentences_to_documents

    p = Path(path)
    if (p / "data" / "train").is_dir():
        sents = load_sentences(RunLayout.of(p), "train")
        if not sents:
            raise SystemExit(f"--train {path}: data/train holds no sentence")
        return sentences_to_documents(sents)
    docs, _ = read_labeled(p, fmt, max_rejected=0.0, strict=False, log=lambda m: print(m, file=sys.stderr))
    return docs


def error_analysis(docs: list, preds: dict[str, list], sentences: list, train_docs: list | None,
                   lexicon: Any) -> tuple[dict[str, dict[Any, Tally]], Tally]:
    """The breakdowns of the outcomes of ``preds`` ({doc_id: [Span]}) on gold ``docs``."""
    outcomes = categorize(docs, preds)
    texts = {d.id: d.text for d in docs}
    out: dict[str, dict[Any, Tally]] = {
        "type": breakdown(outcomes, type_key),
        "sentence length": breakdown(outcomes, SentenceLocator(sentences).key()),
    }
    sections = {section_of(d.id) for d in docs}
    if "-" not in sections and len(sections) > 1:  # CCKS2017 ids <section>-<record>
        out["section"] = breakdown(outcomes, section_key)
    seen_key = MentionIndex(train_docs).key(texts) if train_docs is not None else None
    lex_key = lexicon_key(lexicon, texts) if lexicon is not None else None
    if seen_key is not None:
        out["mention string in training"] = breakdown(outcomes, seen_key)
    if lex_key is not None:
        out["mention string in the model's lexicon"] = breakdown(outcomes, lex_key)
    if seen_key is not None and lex_key is not None:
        out["training x lexicon"] = breakdown(outcomes, lambda o: f"{seen_key(o)} / {lex_key(o)}")
    return out, tally(outcomes)


def model_part(args: argparse.Namespace) -> dict[str, Any]:
    from cemr.inference import read_labeled
    from cemr.metrics import evaluate
    from cemr.predictor import Predictor

    t0 = time.perf_counter()
    docs, _ = read_labeled(args.data, args.format, max_rejected=0.0, strict=False,
                           log=lambda m: print(m, file=sys.stderr))
    predictor = Predictor.load(args.model, args.device)
    preds = {k: [p.span for p in v] for k, v in predictor.predict_documents(docs).items()}
    train_docs = training_documents(args.train, args.train_format) if args.train else None
    lexicon = predictor.collate.lexicon
    groups, total = error_analysis(docs, preds, predictor.split(docs), train_docs, lexicon)
    micro = evaluate(docs, preds).micro
    if micro.tp != total.counts[EXACT]:
        raise AssertionError(f"exact outcomes {total.counts[EXACT]} != true positives {micro.tp}")
    say(f"# {args.model} on {args.data}: {len(docs)} documents, {total.gold} gold, {total.pred} predicted; "
        f"micro F1 {micro.f1:.4f}")
    say("(a pair is keyed by its gold span, a spurious prediction by its own; (ovl): of which a span of the "
        "other side overlaps, paired elsewhere)")
    say()
    for line in tally_table({"all": total}):
        say(line)
    for name, g in groups.items():
        say()
        say(f"## by {name}")
        for line in tally_table(g, bucket_order if name == "sentence length" else str):
            say(line)
    if train_docs is None:
        say("\n(no --train: seen / unseen mention strings not reported)")
    if lexicon is None:
        say("(the model has no dictionary feature: lexicon membership not reported)")
    elapsed = time.perf_counter() - t0
    say(f"\n{elapsed:.1f} s")
    return {"model": args.model, "data": args.data, "micro_f1": micro.f1, "all": total.to_dict(),
            "by": {name: {str(k): t.to_dict() for k, t in g.items()} for name, g in groups.items()},
            "elapsed_s": round(elapsed, 1)}


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data-only", action="store_true",
                      help="similarity of dev/test (and --heldout) text to training text; no model")
    mode.add_argument("--model", metavar="MODEL_DIR", help="error analysis of this model's predictions on --data")
    ap.add_argument("--config", help="--data-only: the experiment config (YAML)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="--data-only: config overrides")
    ap.add_argument("--threshold", type=float, default=0.8,
                    help="near duplicate: Jaccard of char 5-grams at least this (default 0.8)")
    ap.add_argument("--split-seeds", type=int, nargs="*", default=[],
                    help="also the dev/test figures for these data.split_seed values (default: none)")
    ap.add_argument("--block", type=int, default=None,
                    help="the last N records (natural id order) against as many others as train has "
                         "(default N: the test records; 0: off)")
    ap.add_argument("--block-sweep", action="store_true",
                    help="also every contiguous block of --block records against as many others as train has")
    ap.add_argument("--heldout", metavar="PATH", help="a labeled held-out set (an official test set) "
                    "compared with every labeled record")
    ap.add_argument("--heldout-format", default="auto", help="format of --heldout (default auto)")
    ap.add_argument("--pool", action="store_true",
                    help="keep data.unlabeled and measure dev/test duplicates in the prepared pool (slower)")
    ap.add_argument("--keep", metavar="DIR", help="prepare into DIR and keep it (default: a temporary directory)")
    ap.add_argument("--data", help="--model: labeled documents to score")
    ap.add_argument("--format", default="auto", help="--model: format of --data (default auto)")
    ap.add_argument("--train", help="--model: a run directory (its data/train) or a labeled corpus: the "
                    "training mentions for seen / unseen")
    ap.add_argument("--train-format", default="auto", help="format of --train when a corpus (default auto)")
    ap.add_argument("--device", default="cpu", help="--model: device (default cpu)")
    args = ap.parse_args(argv)
    if args.data_only and not args.config:
        ap.error("--data-only needs --config")
    if args.model and not args.data:
        ap.error("--model needs --data")
    if args.model and args.overrides:
        ap.error("KEY=VALUE overrides go with --data-only")
    if not 0.0 < args.threshold <= 1.0:
        ap.error(f"--threshold must be in (0, 1], got {args.threshold}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = data_only(args) if args.data_only else model_part(args)
    print(json.dumps(out, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main()
