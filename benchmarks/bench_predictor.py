"""Predictor throughput before / after issue #15, on one saved model and the same sentences.

    python benchmarks/bench_predictor.py --model RUN/model --data RUN/data/unlabeled
        [--sentences 1000] [--batch-sizes 256,512] [--repeats 5] [--threads 1] [--profile]

*Before* is the predictor as it was (``legacy_predict`` below: pytorch-crf's Viterbi, the float64
forward-backward of :func:`cemr.confidence.crf_marginals` and :func:`sequence_log_prob`, one
``SentencePrediction`` built per row from tag strings); *after* is ``Predictor.predict_sentences``.
Both tag the first ``--sentences`` sentences of ``--data`` (shards, read with
``cemr.corpus.shards.iter_sentences``) the way a Ray Data pseudo-labeling actor does: calls of
``batch_size`` rows in pool order, ``predict_sentences(rows, batch_size)``. Runs alternate (before,
after, then the references) ``--repeats`` times in this one process; medians are reported.

References measured in the same run, so the figure means something on another (or a busier)
machine: a bare bidirectional ``nn.GRU(400 -> 128)`` forward over the same (padded) batches, and
a float32 GEMM ``(4096, 400) @ (400, 768)`` (the GRU's input projection), as rows/s. The spans of
before and after are compared sentence by sentence (they must be identical) and the largest
confidence differences printed. Prints one line per measure and, last, one JSON object.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cemr.confidence import (  # noqa: E402
    crf_marginals,
    entity_confidences,
    sentence_confidence,
    sequence_log_prob,
)
from cemr.corpus.shards import iter_sentences  # noqa: E402
from cemr.predictor import Prediction, Predictor, SentencePrediction  # noqa: E402
from cemr.tagger import _pad  # noqa: E402
from cemr.tags import bio_to_spans  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Before: the predictor's hot path as it was (commit c6365b3), on the same loaded model
# ----------------------------------------------------------------------------------------------


def legacy_infer(tagger, batch):
    """Old ``BiLMBNERTagger.infer``: pytorch-crf Viterbi, float64 marginals, path log prob."""
    tagger.constrain_crf()
    em = tagger.emissions(batch)  # (B, T, K)
    tags = tagger.crf.decode(em, batch.mask)
    marg = crf_marginals(em, batch.mask, tagger.crf)  # (B, T, K)
    padded = _pad(tags, em.shape[1]).to(em.device)  # (B, T)
    logp = sequence_log_prob(em, padded, batch.mask, tagger.crf)  # (B,)
    return tags, marg, logp


def legacy_sentence(p: Predictor, tags, marg, seq_prob) -> SentencePrediction:
    spans = bio_to_spans(p.labels.from_ids(tags))
    confs = entity_confidences(marg, spans, p.labels, p.method, sequence_prob=seq_prob)
    conf = sentence_confidence(marg, tags, p.method, sequence_prob=seq_prob)
    for c in (*confs, conf):
        if not math.isfinite(c):
            raise FloatingPointError(f"non-finite confidence {c}")
    token_conf = marg[np.arange(len(tags)), np.asarray(tags, dtype=np.int64)].astype(float).tolist()
    return SentencePrediction([Prediction(s, c) for s, c in zip(spans, confs)], conf, seq_prob, token_conf)


def legacy_predict(p: Predictor, texts, batch_size: int) -> list[SentencePrediction]:
    """Old ``Predictor.predict_sentences``."""
    out = [SentencePrediction() for _ in texts]
    order = sorted((i for i, t in enumerate(texts) if t), key=lambda i: -len(texts[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = p.collate.from_texts([texts[i] for i in idx]).to(p.device)
            tags, marg, logp = legacy_infer(p.tagger, batch)
            marg = marg.cpu().numpy()
            seq_prob = logp.exp().cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = legacy_sentence(p, tags[row], marg[row], seq_prob[row])
    return out


# ----------------------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------------------


def actor_calls(fn, texts: list[str], batch_size: int) -> list[SentencePrediction]:
    """``fn(rows, batch_size)`` over consecutive calls of ``batch_size`` rows (a Ray Data actor)."""
    out = []
    for b in range(0, len(texts), batch_size):
        out.extend(fn(texts[b : b + batch_size], batch_size))
    return out


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def gru_reference(texts: list[str], batch_size: int) -> float:
    """Seconds of a bare BiGRU(400 -> 128) forward over the texts' padded, length-sorted batches."""
    torch.manual_seed(0)
    gru = nn.GRU(400, 128, batch_first=True, bidirectional=True).eval()
    lens = sorted((len(t) for t in texts), reverse=True)
    xs = [torch.randn(len(lens[b : b + batch_size]), lens[b], 400) for b in range(0, len(lens), batch_size)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in xs:
            gru(x)
    return time.perf_counter() - t0


def gemm_reference(reps: int = 20) -> float:
    """Rows/s of a float32 GEMM (4096, 400) @ (400, 768)."""
    a, w = torch.randn(4096, 400), torch.randn(400, 768)
    a @ w
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ w
    return 4096 * reps / (time.perf_counter() - t0)


def compare(before: list[SentencePrediction], after: list[SentencePrediction]) -> dict:
    """Sentences whose spans differ, and the largest confidence differences."""
    diff = [i for i, (a, b) in enumerate(zip(before, after)) if a.spans != b.spans]
    ent = sent = seq = tok = 0.0
    for a, b in zip(before, after):
        if a.spans != b.spans:
            continue
        ent = max([ent] + [abs(x.confidence - y.confidence) for x, y in zip(a, b)])
        sent = max(sent, abs(a.confidence - b.confidence))
        seq = max(seq, abs(a.sequence_prob - b.sequence_prob))
        tok = max([tok] + [abs(x - y) for x, y in zip(a.token_confidence, b.token_confidence)])
    return {"sentences_with_different_spans": len(diff), "first_different": diff[:5],
            "entities": sum(len(a) for a in before),
            "max_abs_diff_entity_confidence": ent, "max_abs_diff_sentence_confidence": sent,
            "max_abs_diff_sequence_prob": seq, "max_abs_diff_token_confidence": tok}


def profile(fn, top: int = 25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a saved model directory (cemr train ... -> RUN/model)")
    ap.add_argument("--data", required=True, help="sentence shards, e.g. RUN/data/unlabeled")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch-sizes", default="256,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of each path (one pass)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.model, "cpu")
    texts = []
    for s in iter_sentences(args.data):
        texts.append(s.text)
        if len(texts) >= args.sentences:
            break
    chars = sum(len(t) for t in texts)
    print(f"{len(texts)} sentences, {chars} chars (longest {max(map(len, texts))}), threads {args.threads}, "
          f"model {args.model}")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    new = predictor.predict_sentences
    old = lambda rows, bs: legacy_predict(predictor, rows, bs)  # noqa: E731
    actor_calls(new, texts[:64], 64)
    actor_calls(old, texts[:64], 64)
    results = {}
    for bs in sizes:
        times = {"before": [], "after": [], "gru": [], "gemm_rows_per_s": []}
        outs = {}
        for _ in range(args.repeats):
            for name, fn in (("before", old), ("after", new)):
                s, outs[name] = timed(lambda: actor_calls(fn, texts, bs))
                times[name].append(s)
            times["gru"].append(gru_reference(texts, bs))
            times["gemm_rows_per_s"].append(gemm_reference())
        med = {k: statistics.median(v) for k, v in times.items()}
        cmp = compare(outs["before"], outs["after"])
        row = {
            "chars_per_s_before": round(chars / med["before"]),
            "chars_per_s_after": round(chars / med["after"]),
            "speedup": round(med["before"] / med["after"], 2),
            "gru_chars_per_s": round(chars / med["gru"]),
            "gemm_rows_per_s": round(med["gemm_rows_per_s"]),
            "before_vs_gru": round(med["gru"] / med["before"], 4),
            "after_vs_gru": round(med["gru"] / med["after"], 4),
            "before_vs_gemm": round(chars / med["before"] / med["gemm_rows_per_s"], 5),
            "after_vs_gemm": round(chars / med["after"] / med["gemm_rows_per_s"], 5),
            **cmp,
        }
        results[str(bs)] = row
        print(f"batch {bs}: before {row['chars_per_s_before']} chars/s, after {row['chars_per_s_after']} chars/s "
              f"(x{row['speedup']}); bare BiGRU {row['gru_chars_per_s']} chars/s (before {row['before_vs_gru']}, "
              f"after {row['after_vs_gru']} of it); GEMM {row['gemm_rows_per_s']} rows/s; "
              f"spans differ in {cmp['sentences_with_different_spans']} sentences; max |diff| entity conf "
              f"{cmp['max_abs_diff_entity_confidence']:.2e}, sentence {cmp['max_abs_diff_sentence_confidence']:.2e}, "
              f"sequence prob {cmp['max_abs_diff_sequence_prob']:.2e}, token {cmp['max_abs_diff_token_confidence']:.2e}")
        if args.profile:
            for name, fn in (("before", old), ("after", new)):
                print(f"--- profile {name}, batch {bs}\n" + profile(lambda: actor_calls(fn, texts, bs)))
    print(json.dumps({
        "benchmark": "bench_predictor",
        "model": str(args.model),
        "sentences": len(texts),
        "chars": chars,
        "threads": args.threads,
        "repeats": args.repeats,
        "batch_sizes": results,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }, ensure_ascii=False))
    if any(r["sentences_with_different_spans"] for r in results.values()):
        sys.exit("spans differ between before and after")


if __name__ == "__main__":
    main()
